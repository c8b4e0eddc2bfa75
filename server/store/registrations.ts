/**
 * Registrations and their cookies: where each hidden server is registered now, and the cookie
 * items a mobile cookie resolves through. Replacing or removing a registration leaves a change
 * notice (changes.ts), so relays drop sockets parked with the old cookie at their next round.
 */
import { RendezvousError } from '../../core/errors.js';
import { isLive, secretsEqual } from '../cookies.js';
import type { Changes } from './changes.js';
import { cookieItemKey, registrationKey } from './keys.js';
import { isConditionFailed, type Table } from './table.js';

/** The registration scheme whose `R` and `I` cookies differ (`I` derived one-way from `R`). */
export const SPLIT_COOKIE_SCHEME = 'split-v1';

/** Where a hidden server is registered now. */
export interface Registration {
  uuid: string;
  /** The mobile (`I`) cookie. */
  cookie: string;
  /**
   * `split-v1` for registrations whose `R` cookie differs from `I`; absent on registrations made
   * before the split, whose one shared cookie was public: those are treated as not registered.
   */
  cookieScheme?: typeof SPLIT_COOKIE_SCHEME;
  /** The identity's generation when it registered (a rotation in between voids it). */
  generation?: number;
  host: string;
  port: number;
  /** The relay's TLS port for the generic protocol, when it has one. */
  tlsPort?: number;
  region?: string;
  registeredAt: number;
  /** Epoch seconds. */
  expiresAt: number;
  /**
   * The registrant's source address, when known: a later registration from elsewhere tells the
   * holder of the right code where the one it replaced came from (two agents on one uuid).
   */
  source?: string;
}

/** How long a fence stands (seconds): far longer than any registration's run. */
export const FENCE_TTL_SECONDS = 86_400;

/** The generation a deletion fences with: no registration of any earlier identity passes it. */
export const REVOKED_FOR_GOOD = Number.MAX_SAFE_INTEGER;

/** What a valid cookie resolves to. */
export interface CookieBinding {
  uuid: string;
  expiresAt: number;
  /** The identity's generation the registration was made in (relays end rendezvous of older ones). */
  generation?: number;
}

/** The registrations and cookie items of one table. */
export class Registrations {
  constructor(
    private readonly table: Table,
    private readonly changes: Changes,
  ) {}

  /**
   * Makes `reg` the uuid's current registration: writes the new cookie, then swaps the
   * registration (returning the one it replaced). A crash between the writes leaves at worst an
   * orphan cookie that `resolveCookie` refuses (it is not current) and TTL removes.
   */
  async put(reg: Registration): Promise<Registration | undefined> {
    await this.putCookie(reg);
    return (await this.swap(reg)).replaced;
  }

  /**
   * Writes the cookie item `reg`'s cookie will resolve through. Inert until `swap` makes it the
   * uuid's current cookie: `resolveCookie` refuses a cookie that is not current, so it may be
   * written before the code that earns it is claimed (and dropped with `dropCookie` if it is not).
   */
  async putCookie(reg: Registration): Promise<void> {
    await this.table.put({
      Item: { ...cookieItemKey(reg.cookie), uuid: reg.uuid, expiresAt: reg.expiresAt },
      ConditionExpression: 'attribute_not_exists(pk)',
    });
  }

  /** Deletes a cookie item that never became current (its registration was refused). */
  async dropCookie(cookie: string): Promise<void> {
    await this.table.delete({ Key: cookieItemKey(cookie) });
  }

  /**
   * Makes `reg` (whose cookie item is written) the uuid's current registration, with its change
   * notice written beside it: relays honour a notice that lands before or with its change, so
   * sockets parked with the old cookie are told at their next pass. Written for every
   * registration (whether one was replaced is known only from the swap), so the two writes take
   * one round trip. Refused (`fenced`) when a rotation, disable or deletion since `reg`'s
   * generation left its fence (see `fence`), or a newer generation's registration stands.
   */
  async swap(reg: Registration): Promise<{ replaced?: Registration; fenced: boolean }> {
    // The replaced cookie item stays until TTL removes it: `resolveCookie` refuses it because it
    // is no longer current, and can say so precisely ("replaced") rather than "unknown".
    const [put, notice] = await Promise.allSettled([
      this.table.put({
        Item: { ...registrationKey(reg.uuid), ...reg },
        ConditionExpression:
          '(attribute_not_exists(revokedGeneration) OR revokedGeneration <= :g) AND (attribute_not_exists(generation) OR generation <= :g)',
        ExpressionAttributeValues: { ':g': reg.generation ?? 0 },
        ReturnValues: 'ALL_OLD',
      }),
      this.changes.note(reg.uuid),
    ]);
    if (put.status === 'rejected') {
      // Fenced: nothing changed, so the notice (written or not) announces nothing.
      if (isConditionFailed(put.reason)) return { fenced: true };
      throw put.reason;
    }
    if (notice.status === 'rejected') throw notice.reason;
    const old = put.value as Registration | undefined;
    // A fence is no registration: nothing was replaced.
    return { replaced: old?.cookie ? old : undefined, fenced: false };
  }

  /**
   * Leaves a fence where the uuid's registration was: a registration item without a cookie,
   * marked with the generation a rotation, disable (`generation`, the identity's new one) or
   * deletion (`REVOKED_FOR_GOOD`) ended. A registration of an older generation whose code was
   * claimed before that and that is written after it is refused by `swap`; one written just
   * before it is replaced by it. Never replaces a registration or fence of the same or a newer
   * generation. Readers see no registration (`get`, `record`).
   */
  async fence(uuid: string, generation: number): Promise<void> {
    try {
      await this.table.put({
        // Expires with the table's TTL once no registration can still be on its way (a
        // function's run is seconds long); a deleted uuid's fence is not left for good.
        Item: {
          ...registrationKey(uuid),
          uuid,
          revokedGeneration: generation,
          expiresAt: Math.floor(Date.now() / 1000) + FENCE_TTL_SECONDS,
        },
        ConditionExpression:
          '(attribute_not_exists(generation) OR generation < :g) AND (attribute_not_exists(revokedGeneration) OR revokedGeneration < :g)',
        ExpressionAttributeValues: { ':g': generation },
      });
    } catch (err) {
      if (!isConditionFailed(err)) throw err;
    }
  }

  /** Removes a deletion's fence when the uuid is provisioned again (its generations start over). */
  async unfence(uuid: string): Promise<void> {
    try {
      await this.table.delete({
        Key: registrationKey(uuid),
        ConditionExpression: 'attribute_exists(revokedGeneration)',
      });
    } catch (err) {
      if (!isConditionFailed(err)) throw err;
    }
  }

  /** The uuid's live registration, or undefined (missing or expired). */
  async get(uuid: string, nowMs: number = Date.now()): Promise<Registration | undefined> {
    const reg = await this.record(uuid);
    if (!reg || !isLive(reg.expiresAt, nowMs)) return undefined;
    // Made before the R/I split: its one cookie was public, so anyone could have parked with it.
    if (reg.cookieScheme !== SPLIT_COOKIE_SCHEME) return undefined;
    return reg;
  }

  /** The uuid's registration even when expired (operator console: "last registration"). */
  async record(uuid: string): Promise<Registration | undefined> {
    const { pk, sk } = registrationKey(uuid);
    const item = await this.table.get<Registration>(pk, sk);
    // A fence (see `fence`) is where a registration ended, not one.
    return item?.cookie ? item : undefined;
  }

  /**
   * Resolves a cookie to its uuid, checking existence, expiry and that it is still the uuid's
   * current cookie. Throws COOKIE_UNKNOWN, COOKIE_EXPIRED or COOKIE_REPLACED.
   */
  async resolveCookie(cookie: string, nowMs: number = Date.now()): Promise<CookieBinding> {
    const { pk, sk } = cookieItemKey(cookie);
    const item = await this.table.get<CookieBinding>(pk, sk);
    if (!item) throw new RendezvousError('COOKIE_UNKNOWN', 'unknown cookie');
    if (!isLive(item.expiresAt, nowMs)) {
      throw new RendezvousError('COOKIE_EXPIRED', 'cookie expired, register again');
    }
    const reg = await this.get(item.uuid, nowMs);
    // No registration at all: the identity was disabled, rotated or deleted by the operator, or
    // registered before the R/I split (which must register again).
    if (!reg) throw new RendezvousError('COOKIE_UNKNOWN', 'unknown cookie (registration revoked)');
    if (!secretsEqual(reg.cookie, cookie)) {
      throw new RendezvousError('COOKIE_REPLACED', 'cookie replaced by a newer registration');
    }
    return { uuid: item.uuid, expiresAt: item.expiresAt, generation: reg.generation ?? 0 };
  }

  /**
   * Shortens a replaced cookie record's life (a cookie that lived "until the next registration"
   * would otherwise stay in the table for good); it is refused as replaced meanwhile anyway.
   */
  async expireCookie(cookie: string, expiresAt: number): Promise<void> {
    try {
      await this.table.update({
        Key: cookieItemKey(cookie),
        UpdateExpression: 'SET expiresAt = :e',
        ConditionExpression: 'attribute_exists(pk)',
        ExpressionAttributeValues: { ':e': expiresAt },
      });
    } catch (err) {
      if (!isConditionFailed(err)) throw err;
    }
  }

  /**
   * Deletes the uuid's registration and its cookie record; with `onlyCookie`, only while that is
   * still the current cookie (a registration withdrawing itself must not delete a newer one). A
   * change notice goes first (relays re-check the uuid while it is young), unless the caller
   * wrote one already (`noted`: an identity's rotation, disable or deletion).
   */
  async delete(
    uuid: string,
    onlyCookie?: string,
    { noted = false }: { noted?: boolean } = {},
  ): Promise<void> {
    if (!noted) await this.changes.note(uuid);
    let old: Registration | undefined;
    try {
      old = (await this.table.delete({
        Key: registrationKey(uuid),
        ReturnValues: 'ALL_OLD',
        ...(onlyCookie === undefined
          ? {}
          : { ConditionExpression: 'cookie = :c', ExpressionAttributeValues: { ':c': onlyCookie } }),
      })) as Registration | undefined;
    } catch (err) {
      if (isConditionFailed(err)) return;
      throw err;
    }
    if (old?.cookie) await this.table.delete({ Key: cookieItemKey(old.cookie) });
  }
}
