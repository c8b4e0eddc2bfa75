/**
 * Identities: a hidden server's TOTP parameters as the operator provisioned them, with replay
 * protection (the last accepted step), the CONNECT cookie, the generation a rotation or disable
 * bumps, trusted sources and compatibility settings. Ending an identity's secret also ends its
 * registration (registrations.ts); a change notice (changes.ts) is written first, before anything
 * changes, so relays re-check the uuid's parks while the change lands.
 */
import { badRequest, RendezvousError } from '../../core/errors.js';
import type { TotpCompat, TotpParams } from '../../core/totp.js';
import type { IdentityLimits } from '../usage-types.js';
import type { Changes } from './changes.js';
import { IDENTITY_SK, identityKey } from './keys.js';
import type { LastRendezvousRecords } from './parks.js';
import type { Registrations } from './registrations.js';
import { isConditionFailed, type Table, withoutKeys } from './table.js';

/** A hidden server's identity as provisioned by the operator. */
export interface Identity extends TotpParams {
  uuid: string;
  label?: string;
  createdAt: number;
  /** Last accepted TOTP time step (replay protection). */
  lastStep?: number;
  /** Which door accepted `lastStep`: a PUT registration or a relay CONNECT. */
  lastStepBy?: 'register' | 'connect';
  /** The cookie later CONNECTs may present instead of a code (HTTP-specific protocol). */
  httpCookie?: string;
  httpCookieExpiresAt?: number;
  disabled?: boolean;
  /**
   * Bumped by every rotation and disable: HTTP parks remember the generation they were made in,
   * and the relay drops those of an older one. Absent means 0.
   */
  generation?: number;
  /** Source addresses (newest last, bounded) that registered successfully: exempt from the uuid's lockout. */
  trustedSources?: string[];
  /** Compatibility settings of an identity imported from node-rendezvous; absent means strict. */
  compat?: TotpCompat;
  /** Usage limits the operator set (issue 30); absent: none. */
  limits?: IdentityLimits;
  /** Times the code of `lastStep` was used again (compat `reuseWithinStep` only; bounded). */
  reuses?: number;
  /**
   * The code lengths a compat identity's clients have registered with (`full`: the whole
   * unreduced value): while its uuid is under attack, other lengths are refused.
   */
  codeLengths?: CodeLength[];
}

/** The lowest bandwidth limit accepted (bytes per second): below it a rendezvous barely moves. */
export const MIN_BYTES_PER_SECOND = 1024;

/**
 * Checks limits an operator sets (BAD_REQUEST naming the field): each present one a positive
 * integer, a bandwidth of at least MIN_BYTES_PER_SECOND, no other field. Returns the limits
 * without absent fields, or undefined when none is left (no limits).
 */
export function checkLimits(limits: IdentityLimits | undefined): IdentityLimits | undefined {
  if (limits === undefined || limits === null) return undefined;
  if (typeof limits !== 'object') throw badRequest('limits: an object');
  const known = ['monthlyBytes', 'bytesPerSecond', 'maxConcurrent'];
  for (const k of Object.keys(limits))
    if (!known.includes(k)) throw badRequest(`limits: unknown field ${k.slice(0, 40)}`);
  const out: IdentityLimits = {};
  const field = (k: keyof IdentityLimits, min: number, rule: string) => {
    const v = limits[k];
    if (v === undefined || v === null) return;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw badRequest(`${k}: ${rule}`);
    out[k] = v;
  };
  field('monthlyBytes', 1, 'a positive whole number of bytes');
  field(
    'bytesPerSecond',
    MIN_BYTES_PER_SECOND,
    `a whole number of bytes per second, at least ${MIN_BYTES_PER_SECOND}`,
  );
  field('maxConcurrent', 1, 'a whole number, at least 1');
  return Object.keys(out).length ? out : undefined;
}

/** A code length a compat identity accepted: its number of last digits, or `full` (the whole value). */
export type CodeLength = number | 'full';

/** What a code claim also writes: the generation it was checked in (a rotation since fails it), and the trusted list. */
export interface ClaimExtra {
  generation?: number;
  trustedSources?: string[];
  /** The identity's code lengths with the claiming code's added (only when that changed them). */
  codeLengths?: CodeLength[];
}

/** The `SET` clauses and values a claim's extras add. */
function extraUpdates(extra: ClaimExtra): { set: string; values: Record<string, unknown> } {
  return {
    set: `${extra.trustedSources ? ', trustedSources = :ts' : ''}${extra.codeLengths ? ', codeLengths = :cl' : ''}`,
    values: {
      ...(extra.trustedSources ? { ':ts': extra.trustedSources } : {}),
      ...(extra.codeLengths ? { ':cl': extra.codeLengths } : {}),
    },
  };
}

/** The identities of one table. */
export class Identities {
  constructor(
    private readonly table: Table,
    private readonly registrations: Registrations,
    private readonly last: LastRendezvousRecords,
    private readonly changes: Changes,
  ) {}

  /** Creates an identity; ALREADY_EXISTS when the uuid is taken. */
  async create(id: Identity): Promise<void> {
    try {
      await this.table.put({
        Item: { ...identityKey(id.uuid), ...id },
        ConditionExpression: 'attribute_not_exists(pk)',
      });
    } catch (err) {
      if (isConditionFailed(err)) {
        throw new RendezvousError('ALREADY_EXISTS', `identity ${id.uuid} already exists`);
      }
      throw err;
    }
  }

  /** Reads an identity, or undefined. */
  async get(uuid: string): Promise<Identity | undefined> {
    const { pk, sk } = identityKey(uuid);
    return this.table.get<Identity>(pk, sk);
  }

  /** Every identity (operator console). Secrets stay in the items; callers must not show them. */
  async list(): Promise<Identity[]> {
    const items = await this.table.scanAll({
      FilterExpression: 'sk = :identity',
      ExpressionAttributeValues: { ':identity': IDENTITY_SK },
    });
    return items.map((item) => withoutKeys<Identity>(item)).sort((a, b) => a.createdAt - b.createdAt);
  }

  /**
   * Records `step` as the last accepted TOTP step, only if it is newer than the one stored and
   * the identity is enabled: the single conditional write that makes a code usable once.
   * Returns false when the condition failed (replay, or disabled meanwhile).
   */
  async acceptStep(
    uuid: string,
    step: number,
    by: 'register' | 'connect' = 'register',
    httpCookie?: { cookie: string; expiresAt: number },
    extra: ClaimExtra = {},
  ): Promise<boolean> {
    const generation = extra.generation ?? 0;
    const more = extraUpdates(extra);
    try {
      await this.table.update({
        Key: identityKey(uuid),
        UpdateExpression: `SET lastStep = :step, lastStepBy = :by, reuses = :zero${
          httpCookie ? ', httpCookie = :hc, httpCookieExpiresAt = :hce' : ''
        }${more.set}`,
        ConditionExpression: `attribute_exists(pk) AND (attribute_not_exists(lastStep) OR lastStep < :step) AND (attribute_not_exists(disabled) OR disabled = :false) AND (${
          generation === 0 ? 'attribute_not_exists(generation) OR ' : ''
        }generation = :gen)`,
        ExpressionAttributeValues: {
          ':step': step,
          ':by': by,
          ':false': false,
          ':gen': generation,
          ':zero': 0,
          ...(httpCookie ? { ':hc': httpCookie.cookie, ':hce': httpCookie.expiresAt } : {}),
          ...more.values,
        },
      });
      return true;
    } catch (err) {
      if (isConditionFailed(err)) return false;
      throw err;
    }
  }

  /**
   * Counts one more use of the code of `lastStep` by the same door (compat identities with
   * `reuseWithinStep`): one conditional write, so however many arrive at once, at most `max`
   * reuses succeed per step. Returns the updated identity, or undefined when the condition failed
   * (another step, the other door, the bound reached, disabled or rotated meanwhile).
   */
  async reuseStep(
    uuid: string,
    step: number,
    by: 'register' | 'connect',
    max: number,
    extra: ClaimExtra = {},
  ): Promise<Identity | undefined> {
    const generation = extra.generation ?? 0;
    const more = extraUpdates(extra);
    try {
      const out = await this.table.update({
        Key: identityKey(uuid),
        UpdateExpression: `SET reuses = if_not_exists(reuses, :zero) + :one${more.set}`,
        ConditionExpression: `attribute_exists(pk) AND lastStep = :step AND lastStepBy = :by AND (attribute_not_exists(reuses) OR reuses < :max) AND (attribute_not_exists(disabled) OR disabled = :false) AND (${
          generation === 0 ? 'attribute_not_exists(generation) OR ' : ''
        }generation = :gen)`,
        ExpressionAttributeValues: {
          ':step': step,
          ':by': by,
          ':max': max,
          ':zero': 0,
          ':one': 1,
          ':false': false,
          ':gen': generation,
          ...more.values,
        },
        ReturnValues: 'ALL_NEW',
      });
      return withoutKeys<Identity>(out ?? {});
    } catch (err) {
      if (isConditionFailed(err)) return undefined;
      throw err;
    }
  }

  /** Updates an existing identity; NOT_FOUND when there is none. */
  private async update(uuid: string, expression: string, values: Record<string, unknown>): Promise<void> {
    try {
      await this.table.update({
        Key: identityKey(uuid),
        UpdateExpression: expression,
        ConditionExpression: 'attribute_exists(pk)',
        // DynamoDB refuses an empty map (a bare REMOVE has no values).
        ExpressionAttributeValues: Object.keys(values).length ? values : undefined,
      });
    } catch (err) {
      if (isConditionFailed(err)) throw new RendezvousError('NOT_FOUND', 'no such identity');
      throw err;
    }
  }

  /**
   * Disables or enables an identity. Disabling also removes its registration, so every relay
   * refuses its cookie at the next check and tells its parked sockets `-ERR`.
   */
  async setDisabled(uuid: string, disabled: boolean): Promise<void> {
    if (disabled) await this.changes.note(uuid);
    await this.update(
      uuid,
      disabled
        ? 'SET disabled = :d ADD generation :one REMOVE httpCookie, httpCookieExpiresAt'
        : 'SET disabled = :d',
      disabled ? { ':d': disabled, ':one': 1 } : { ':d': disabled },
    );
    if (disabled) await this.registrations.delete(uuid, undefined, { noted: true });
  }

  /**
   * Replaces an identity's TOTP secret and ends everything made with the old one: the CONNECT
   * cookie, the registration and its cookie record (so the cookie no longer looks up or parks),
   * and — through the bumped generation the relays re-check — HTTP parks. Replay protection stays.
   * The identity is updated before the registration is deleted, so a registration racing with the
   * rotation either sees the new generation (and withdraws itself) or is deleted here.
   */
  async rotateSecret(uuid: string, params: TotpParams, compat?: TotpCompat): Promise<void> {
    await this.changes.note(uuid);
    // The code parameters go with the secret: a strict rotation of an imported identity drops
    // its compatibility settings; a forced re-import sets them.
    await this.update(
      uuid,
      `SET secret = :s, digits = :d, step = :st, algorithm = :a${
        compat ? ', compat = :c' : ''
      } ADD generation :one REMOVE httpCookie, httpCookieExpiresAt, codeLengths${compat ? '' : ', compat'}`,
      {
        ':s': params.secret,
        ':d': params.digits,
        ':st': params.step,
        ':a': params.algorithm,
        ':one': 1,
        ...(compat ? { ':c': compat } : {}),
      },
    );
    await this.registrations.delete(uuid, undefined, { noted: true });
  }

  /**
   * Sets (or, with undefined, removes) an identity's compatibility settings and the informative
   * `digits` that goes with them. Registrations stand; new rules apply from the next code checked
   * (no notice: nothing a relay checks changes).
   */
  async setCompat(uuid: string, compat: TotpCompat | undefined, digits: number): Promise<void> {
    await this.update(
      uuid,
      compat ? 'SET compat = :c, digits = :d' : 'SET digits = :d REMOVE compat',
      compat ? { ':c': compat, ':d': digits } : { ':d': digits },
    );
  }

  /**
   * Sets (undefined or `{}`: removes) an identity's usage limits, checked by `checkLimits`. The
   * change notice is written FIRST, so every relay re-reads the uuid's limits in its next
   * revalidation round once the identity item has them. NOT_FOUND for an unknown uuid (its
   * notice costs the relays a read each, nothing more).
   */
  async setLimits(uuid: string, limits: IdentityLimits | undefined): Promise<void> {
    const checked = checkLimits(limits);
    await this.changes.note(uuid);
    await this.update(uuid, checked ? 'SET limits = :l' : 'REMOVE limits', checked ? { ':l': checked } : {});
  }

  /** Deletes an identity, its registration and its last-rendezvous record. */
  async delete(uuid: string): Promise<void> {
    await this.changes.note(uuid);
    await this.registrations.delete(uuid, undefined, { noted: true });
    await this.last.delete(uuid);
    await this.table.delete({ Key: identityKey(uuid) });
  }
}
