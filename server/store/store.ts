/**
 * The state store: one DynamoDB table (`pk`/`sk`, TTL attribute `expiresAt`). This is the only
 * module that imports the DynamoDB SDK. Every write is a single-item (conditional) write, so it
 * runs on DynamoDB, DynamoDB Local and dynalite alike; SDK errors leave here as typed errors.
 *
 *   SERVER#<uuid> / IDENTITY       secret, digits, step, algorithm, label, lastStep, generation,
 *                                  trusted sources, compat (settings of identities imported from
 *                                  node-rendezvous; absent = strict), reuses
 *   SERVER#<uuid> / REGISTRATION   current mobile cookie <c>, scheme, relay host/port, region, expiresAt
 *   SERVER#<uuid> / ATTEMPTS       wrong-code guesses in the current window (exists for any uuid
 *                                  anyone guessed at, known or not, so the two look the same)
 *   SOURCE#<addr> / ATTEMPTS       guesses from one source address in the current window
 *   COOKIE#<c>    / COOKIE         uuid, expiresAt
 *   COOKIE#<c>    / PARK#<relay>   a relay holding generic-protocol sockets parked for <c>
 *   SERVER#<uuid> / HTTPPARK#<relay>  a relay holding HTTP-protocol (CONNECT) sockets of <uuid>
 *   SERVER#<uuid> / LAST           the uuid's last rendezvous per protocol (operator console)
 *   CHANGES       / <ms>#<rand>    a uuid whose cookie or identity changed (replaced, revoked,
 *                                  rotated, disabled, deleted): relays read these once per pass
 *                                  instead of re-reading every parked key (expires after an hour)
 *
 * <c> is always the mobile (`I`) cookie; the hidden server's `R` cookie is never stored (the relay
 * derives <c> from it, see `mobileCookieFor`).
 */
import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ResourceInUseException,
} from '@aws-sdk/client-dynamodb';
import {
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  ScanCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { RendezvousError, storeUnavailable } from '../../core/errors.js';
import type { TotpCompat, TotpParams } from '../../core/totp.js';
import { isLive, secretsEqual } from '../cookies.js';
import { type StoreSettings, storeFailure, storeSettings } from './errors.js';

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
  /** Times the code of `lastStep` was used again (compat `reuseWithinStep` only; bounded). */
  reuses?: number;
}

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
}

/** What a valid cookie resolves to. */
export interface CookieBinding {
  uuid: string;
  expiresAt: number;
}

/** Which protocol a park record belongs to. */
export type ParkKind = 'generic' | 'http';

/** One relay's claim to hold parked sockets for a cookie (generic) or a uuid (http). */
export interface ParkRecord {
  relayId: string;
  /** `host:port` of that relay's peer listener. */
  peer: string;
  count: number;
  /** For http parks: the newest TOTP step a live park there was made with. */
  step?: number;
  /** Epoch seconds; a record not refreshed by then is stale. */
  expiresAt: number;
  /** The parking relay's region (multi-region; absent: the same region as every reader). */
  region?: string;
  /** Public base URL of that region's HTTP-specific port (where other regions redirect to). */
  httpUrl?: string;
  /** Display only (console): the relay's public `host:port` for this record's protocol. */
  address?: string;
  /** What the parked agent last reported about its target, since when, and its newest report (epoch ms). */
  target?: 'up' | 'down';
  targetSince?: number;
  targetAt?: number;
}

/** A uuid's last rendezvous through one protocol, as the relay holding its hidden socket saw it. */
export interface LastRendezvousRecord {
  /** End time, epoch ms. */
  at: number;
  end: string;
  bytesToHidden: number;
  bytesToMobile: number;
  durationMs: number;
  /** 0: both sides on one relay; 1: through a peer link. */
  hops: number;
  relayId: string;
  /** The writing relay's public `host:port` and region, when it knows them. */
  address?: string;
  region?: string;
  mobileRelayId?: string;
}

/** A uuid's last rendezvous through each protocol (absent: none within LAST_RENDEZVOUS_TTL_SECONDS). */
export type LastRendezvous = Partial<Record<ParkKind, LastRendezvousRecord>>;

/**
 * The LAST item lives this long after its newest write: a month of "last rendezvous" for the
 * console, while the item of a deleted identity (or one a late rendezvous end re-created) goes.
 */
export const LAST_RENDEZVOUS_TTL_SECONDS = 30 * 24 * 3600;

const parkKeys = (kind: ParkKind, key: string) =>
  kind === 'generic'
    ? { pk: `COOKIE#${key}`, prefix: 'PARK#' }
    : { pk: `SERVER#${key}`, prefix: 'HTTPPARK#' };

/** How to reach the table. */
export interface StoreOptions {
  table: string;
  /** Overrides the SDK's endpoint (else `AWS_ENDPOINT_URL_DYNAMODB` / the default applies). */
  endpoint?: string;
  region?: string;
}

/** Longest a single store request may take before it counts as a failure. */
export const STORE_REQUEST_TIMEOUT_MS = 3_000;

/** How long a change notice is kept (relays read the last seconds of them each pass). */
export const CHANGE_TTL_SECONDS = 3_600;
const CHANGES_PK = 'CHANGES';
/** Sort key of a change notice: zero-padded milliseconds, so a range read is a time range. */
const changeSk = (ms: number) => ms.toString().padStart(15, '0');

/** A change notice: `uuid`'s cookie or identity changed at `at` (epoch ms of the writer's clock). */
export interface ChangeNotice {
  id: string;
  uuid: string;
  at: number;
}

const serverKey = (uuid: string) => `SERVER#${uuid}`;
const cookieKey = (cookie: string) => `COOKIE#${cookie}`;

/** What a guess counter is kept for: one uuid, or one source address. */
export type AttemptScope = 'uuid' | 'source';

/** A guess counter's current window. */
export interface AttemptWindow {
  count: number;
  /** Epoch seconds. */
  windowStart: number;
}

/** The outcome of reserving one guess. */
export type Reservation = { ok: true; windowStart: number } | { ok: false; retryAfter: number };

const attemptsKey = (scope: AttemptScope, key: string) => ({
  pk: scope === 'uuid' ? serverKey(key) : `SOURCE#${key}`,
  sk: 'ATTEMPTS',
});

function isLoopback(endpoint: string | undefined): boolean {
  if (!endpoint) return false;
  try {
    const host = new URL(endpoint).hostname;
    return host === 'localhost' || host === '[::1]' || host.startsWith('127.');
  } catch {
    return false;
  }
}

/** DynamoDB-backed store. One instance (one SDK client) per process. */
export class Store {
  readonly table: string;
  /** What this store runs on and where each setting came from (named when it fails). */
  readonly settings: StoreSettings;
  private readonly raw: DynamoDBClient;
  private readonly doc: DynamoDBDocumentClient;

  constructor(opts: StoreOptions) {
    this.table = opts.table;
    this.settings = storeSettings(opts);
    const endpoint = this.settings.endpoint;
    const local = isLoopback(endpoint);
    const hasCreds = Boolean(process.env.AWS_ACCESS_KEY_ID || process.env.AWS_PROFILE);
    this.raw = new DynamoDBClient({
      endpoint,
      region: this.settings.region,
      // Dummy credentials only for a local store, so a real deployment never runs on them.
      ...(local && !hasCreds ? { credentials: { accessKeyId: 'local', secretAccessKey: 'local' } } : {}),
      // A dead or frozen store must fail fast: callers answer 503 / -ERR rather than hang. Without
      // throwOnRequestTimeout the SDK only logs a warning when requestTimeout passes.
      maxAttempts: 2,
      requestHandler: {
        connectionTimeout: 1_000,
        requestTimeout: STORE_REQUEST_TIMEOUT_MS,
        throwOnRequestTimeout: true,
      },
    });
    this.doc = DynamoDBDocumentClient.from(this.raw, {
      marshallOptions: { removeUndefinedValues: true },
    });
  }

  /** Creates the table if missing (local stacks and tests; CDK owns it on AWS). */
  async ensureTable(): Promise<void> {
    try {
      await this.raw.send(
        new CreateTableCommand({
          TableName: this.table,
          BillingMode: 'PAY_PER_REQUEST',
          AttributeDefinitions: [
            { AttributeName: 'pk', AttributeType: 'S' },
            { AttributeName: 'sk', AttributeType: 'S' },
          ],
          KeySchema: [
            { AttributeName: 'pk', KeyType: 'HASH' },
            { AttributeName: 'sk', KeyType: 'RANGE' },
          ],
        }),
      );
    } catch (err) {
      if (!(err instanceof ResourceInUseException)) throw storeFailure(err, this.settings);
    }
    for (let i = 0; i < 100; i++) {
      const t = await this.raw.send(new DescribeTableCommand({ TableName: this.table }));
      if (t.Table?.TableStatus === 'ACTIVE') return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw storeUnavailable(new Error(`table ${this.table} did not become active`));
  }

  /** Releases the SDK client's sockets. */
  close(): void {
    this.raw.destroy();
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof RendezvousError || err instanceof ConditionalCheckFailedException) throw err;
      throw storeFailure(err, this.settings);
    }
  }

  /** A strongly consistent read of one item, without its keys. */
  private async getItem<T>(pk: string, sk: string): Promise<T | undefined> {
    const out = await this.call(() =>
      this.doc.send(new GetCommand({ TableName: this.table, Key: { pk, sk }, ConsistentRead: true })),
    );
    if (!out.Item) return undefined;
    const { pk: _pk, sk: _sk, ...rest } = out.Item;
    return rest as T;
  }

  /** Creates an identity; ALREADY_EXISTS when the uuid is taken. */
  async createIdentity(id: Identity): Promise<void> {
    try {
      await this.call(() =>
        this.doc.send(
          new PutCommand({
            TableName: this.table,
            Item: { pk: serverKey(id.uuid), sk: 'IDENTITY', ...id },
            ConditionExpression: 'attribute_not_exists(pk)',
          }),
        ),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) {
        throw new RendezvousError('ALREADY_EXISTS', `identity ${id.uuid} already exists`);
      }
      throw err;
    }
  }

  /** Reads an identity, or undefined. */
  async getIdentity(uuid: string): Promise<Identity | undefined> {
    return this.getItem<Identity>(serverKey(uuid), 'IDENTITY');
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
    /** The generation the code was checked in (a rotation since fails the write), and the new trusted list. */
    extra: { generation?: number; trustedSources?: string[] } = {},
  ): Promise<boolean> {
    const generation = extra.generation ?? 0;
    try {
      await this.call(() =>
        this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key: { pk: serverKey(uuid), sk: 'IDENTITY' },
            UpdateExpression: `SET lastStep = :step, lastStepBy = :by, reuses = :zero${
              httpCookie ? ', httpCookie = :hc, httpCookieExpiresAt = :hce' : ''
            }${extra.trustedSources ? ', trustedSources = :ts' : ''}`,
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
              ...(extra.trustedSources ? { ':ts': extra.trustedSources } : {}),
            },
          }),
        ),
      );
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
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
    extra: { generation?: number; trustedSources?: string[] } = {},
  ): Promise<Identity | undefined> {
    const generation = extra.generation ?? 0;
    try {
      const out = await this.call(() =>
        this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key: { pk: serverKey(uuid), sk: 'IDENTITY' },
            UpdateExpression: `SET reuses = if_not_exists(reuses, :zero) + :one${
              extra.trustedSources ? ', trustedSources = :ts' : ''
            }`,
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
              ...(extra.trustedSources ? { ':ts': extra.trustedSources } : {}),
            },
            ReturnValues: 'ALL_NEW',
          }),
        ),
      );
      const { pk: _pk, sk: _sk, ...rest } = out.Attributes ?? {};
      return rest as Identity;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return undefined;
      throw err;
    }
  }

  /**
   * Shortens a replaced cookie record's life (a cookie that lived "until the next registration"
   * would otherwise stay in the table for good); it is refused as replaced meanwhile anyway.
   */
  async expireCookie(cookie: string, expiresAt: number): Promise<void> {
    try {
      await this.call(() =>
        this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key: { pk: cookieKey(cookie), sk: 'COOKIE' },
            UpdateExpression: 'SET expiresAt = :e',
            ConditionExpression: 'attribute_exists(pk)',
            ExpressionAttributeValues: { ':e': expiresAt },
          }),
        ),
      );
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
    }
  }

  /**
   * Reserves one guess in a counter's window, atomically: one conditional write that succeeds only
   * while the window holds fewer than `limit` (or has lapsed, starting a new one). However many
   * guesses arrive at once, at most `limit` reservations succeed per window, so at most that many
   * codes are evaluated. The item exists for unknown uuids too (and expires with its window).
   */
  async reserveAttempt(
    scope: AttemptScope,
    key: string,
    limit: number,
    nowSec: number,
    windowSec: number,
  ): Promise<Reservation> {
    const Key = attemptsKey(scope, key);
    const cutoff = nowSec - windowSec;
    const names = { '#n': 'guesses' };
    const inWindow = async (): Promise<Reservation | undefined> => {
      try {
        const out = await this.call(() =>
          this.doc.send(
            new UpdateCommand({
              TableName: this.table,
              Key,
              UpdateExpression: 'SET #n = #n + :one',
              ConditionExpression: 'windowStart > :cutoff AND #n < :limit',
              ExpressionAttributeNames: names,
              ExpressionAttributeValues: { ':one': 1, ':cutoff': cutoff, ':limit': limit },
              ReturnValues: 'ALL_NEW',
            }),
          ),
        );
        return { ok: true, windowStart: Number(out.Attributes?.windowStart) };
      } catch (err) {
        if (err instanceof ConditionalCheckFailedException) return undefined;
        throw err;
      }
    };
    const first = await inWindow();
    if (first) return first;
    if (limit > 0) {
      try {
        // No window, or a lapsed one: this guess opens a new window.
        await this.call(() =>
          this.doc.send(
            new UpdateCommand({
              TableName: this.table,
              Key,
              UpdateExpression: 'SET #n = :one, windowStart = :now, expiresAt = :exp',
              ConditionExpression: 'attribute_not_exists(windowStart) OR windowStart <= :cutoff',
              ExpressionAttributeNames: names,
              ExpressionAttributeValues: {
                ':one': 1,
                ':now': nowSec,
                ':cutoff': cutoff,
                ':exp': nowSec + windowSec,
              },
            }),
          ),
        );
        return { ok: true, windowStart: nowSec };
      } catch (err) {
        if (!(err instanceof ConditionalCheckFailedException)) throw err;
      }
      // Someone else opened the window meanwhile: try once more inside it.
      const second = await inWindow();
      if (second) return second;
    }
    const current = await this.getAttempts(scope, key);
    const ends = (current?.windowStart ?? nowSec) + windowSec;
    return { ok: false, retryAfter: Math.max(1, ends - nowSec) };
  }

  /** Gives back a reservation (the code was valid: not a guess), if its window is still the current one. */
  async refundAttempt(scope: AttemptScope, key: string, windowStart: number): Promise<void> {
    try {
      await this.call(() =>
        this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key: attemptsKey(scope, key),
            UpdateExpression: 'SET #n = #n - :one',
            ConditionExpression: 'windowStart = :ws AND #n > :zero',
            ExpressionAttributeNames: { '#n': 'guesses' },
            ExpressionAttributeValues: { ':one': 1, ':ws': windowStart, ':zero': 0 },
          }),
        ),
      );
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
    }
  }

  /** A guess counter's window, or undefined (never guessed at, or expired from the table). */
  async getAttempts(scope: AttemptScope, key: string): Promise<AttemptWindow | undefined> {
    const { pk, sk } = attemptsKey(scope, key);
    const item = await this.getItem<{ guesses: number; windowStart: number }>(pk, sk);
    return item ? { count: item.guesses, windowStart: item.windowStart } : undefined;
  }

  /**
   * Ends a uuid's lockout (operator console): deletes its guess counter, so its next codes are
   * evaluated again. Per-source counters are left alone (they belong to addresses, not to it).
   */
  async unlockIdentity(uuid: string): Promise<void> {
    await this.call(() =>
      this.doc.send(new DeleteCommand({ TableName: this.table, Key: attemptsKey('uuid', uuid) })),
    );
  }

  /**
   * Records a uuid's last rendezvous for the given protocols in one write (the others stay), and
   * pushes the item's expiry LAST_RENDEZVOUS_TTL_SECONDS ahead.
   */
  async putLastRendezvous(uuid: string, last: LastRendezvous, nowMs: number = Date.now()): Promise<void> {
    const kinds = (Object.keys(last) as ParkKind[]).filter((k) => last[k]);
    if (!kinds.length) return;
    await this.call(() =>
      this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: serverKey(uuid), sk: 'LAST' },
          UpdateExpression: `SET expiresAt = :exp, ${kinds.map((k) => `#${k} = :${k}`).join(', ')}`,
          ExpressionAttributeNames: Object.fromEntries(kinds.map((k) => [`#${k}`, k])),
          ExpressionAttributeValues: {
            ':exp': Math.floor(nowMs / 1000) + LAST_RENDEZVOUS_TTL_SECONDS,
            ...Object.fromEntries(kinds.map((k) => [`:${k}`, last[k]])),
          },
        }),
      ),
    );
  }

  /** A uuid's last rendezvous per protocol (empty when none is recorded or it expired). */
  async getLastRendezvous(uuid: string, nowMs: number = Date.now()): Promise<LastRendezvous> {
    const item = await this.getItem<LastRendezvous & { expiresAt: number }>(serverKey(uuid), 'LAST');
    if (!item || !isLive(item.expiresAt, nowMs)) return {};
    return { generic: item.generic, http: item.http };
  }

  /**
   * Makes `reg` the uuid's current registration: writes the new cookie, then swaps the
   * registration (returning the one it replaced). A crash between the writes leaves at worst an
   * orphan cookie that `resolveCookie` refuses (it is not current) and TTL removes.
   */
  async putRegistration(reg: Registration): Promise<Registration | undefined> {
    await this.call(() =>
      this.doc.send(
        new PutCommand({
          TableName: this.table,
          Item: {
            pk: cookieKey(reg.cookie),
            sk: 'COOKIE',
            uuid: reg.uuid,
            expiresAt: reg.expiresAt,
          },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      ),
    );
    const out = await this.call(() =>
      this.doc.send(
        new PutCommand({
          TableName: this.table,
          Item: { pk: serverKey(reg.uuid), sk: 'REGISTRATION', ...reg },
          ReturnValues: 'ALL_OLD',
        }),
      ),
    );
    // The replaced cookie item stays until TTL removes it: `resolveCookie` refuses it because it
    // is no longer current, and can say so precisely ("replaced") rather than "unknown".
    const old = out.Attributes as Registration | undefined;
    // Sockets parked with the old cookie, on any relay, are told at the relays' next pass.
    if (old?.cookie && old.cookie !== reg.cookie) await this.noteChange(reg.uuid);
    return old;
  }

  /** The uuid's live registration, or undefined (missing or expired). */
  async getRegistration(uuid: string, nowMs: number = Date.now()): Promise<Registration | undefined> {
    const reg = await this.getRegistrationRecord(uuid);
    if (!reg || !isLive(reg.expiresAt, nowMs)) return undefined;
    // Made before the R/I split: its one cookie was public, so anyone could have parked with it.
    if (reg.cookieScheme !== SPLIT_COOKIE_SCHEME) return undefined;
    return reg;
  }

  /**
   * Resolves a cookie to its uuid, checking existence, expiry and that it is still the uuid's
   * current cookie. Throws COOKIE_UNKNOWN, COOKIE_EXPIRED or COOKIE_REPLACED.
   */
  async resolveCookie(cookie: string, nowMs: number = Date.now()): Promise<CookieBinding> {
    const item = await this.getItem<CookieBinding>(cookieKey(cookie), 'COOKIE');
    if (!item) throw new RendezvousError('COOKIE_UNKNOWN', 'unknown cookie');
    if (!isLive(item.expiresAt, nowMs)) {
      throw new RendezvousError('COOKIE_EXPIRED', 'cookie expired, register again');
    }
    const reg = await this.getRegistration(item.uuid, nowMs);
    // No registration at all: the identity was disabled, rotated or deleted by the operator, or
    // registered before the R/I split (which must register again).
    if (!reg) throw new RendezvousError('COOKIE_UNKNOWN', 'unknown cookie (registration revoked)');
    if (!secretsEqual(reg.cookie, cookie)) {
      throw new RendezvousError('COOKIE_REPLACED', 'cookie replaced by a newer registration');
    }
    return { uuid: item.uuid, expiresAt: item.expiresAt };
  }

  /** Records (or refreshes) that relay `rec.relayId` holds parked sockets for `key`. */
  async putPark(kind: ParkKind, key: string, rec: ParkRecord): Promise<void> {
    const { pk, prefix } = parkKeys(kind, key);
    await this.call(() =>
      this.doc.send(
        new PutCommand({ TableName: this.table, Item: { pk, sk: `${prefix}${rec.relayId}`, ...rec } }),
      ),
    );
  }

  /** Removes a relay's park record for `key`. */
  async deletePark(kind: ParkKind, key: string, relayId: string): Promise<void> {
    const { pk, prefix } = parkKeys(kind, key);
    await this.call(() =>
      this.doc.send(new DeleteCommand({ TableName: this.table, Key: { pk, sk: `${prefix}${relayId}` } })),
    );
  }

  /** The live (unexpired) park records for `key`, freshest first. */
  async listParks(kind: ParkKind, key: string, nowMs: number = Date.now()): Promise<ParkRecord[]> {
    const { pk, prefix } = parkKeys(kind, key);
    const out = await this.call(() =>
      this.doc.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
          ExpressionAttributeValues: { ':pk': pk, ':prefix': prefix },
          ConsistentRead: true,
          Limit: 50,
        }),
      ),
    );
    return ((out.Items ?? []) as Array<ParkRecord & { pk?: string; sk?: string }>)
      .filter((r) => isLive(r.expiresAt, nowMs))
      .map(({ pk: _pk, sk: _sk, ...r }) => r)
      .sort((a, b) => b.expiresAt - a.expiresAt);
  }

  /** Every identity (operator console). Secrets stay in the items; callers must not show them. */
  async listIdentities(): Promise<Identity[]> {
    const out: Identity[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const page = await this.call(() =>
        this.doc.send(
          new ScanCommand({
            TableName: this.table,
            FilterExpression: 'sk = :identity',
            ExpressionAttributeValues: { ':identity': 'IDENTITY' },
            ExclusiveStartKey: start,
          }),
        ),
      );
      for (const item of page.Items ?? []) {
        const { pk: _pk, sk: _sk, ...rest } = item;
        out.push(rest as Identity);
      }
      start = page.LastEvaluatedKey;
    } while (start);
    return out.sort((a, b) => a.createdAt - b.createdAt);
  }

  /** Updates an existing identity; NOT_FOUND when there is none. */
  private async updateIdentity(
    uuid: string,
    expression: string,
    values: Record<string, unknown>,
  ): Promise<void> {
    try {
      await this.call(() =>
        this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key: { pk: serverKey(uuid), sk: 'IDENTITY' },
            UpdateExpression: expression,
            ConditionExpression: 'attribute_exists(pk)',
            ExpressionAttributeValues: values,
          }),
        ),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException)
        throw new RendezvousError('NOT_FOUND', 'no such identity');
      throw err;
    }
  }

  /**
   * Disables or enables an identity. Disabling also removes its registration, so every relay
   * refuses its cookie at the next check and tells its parked sockets `-ERR`.
   */
  async setDisabled(uuid: string, disabled: boolean): Promise<void> {
    await this.updateIdentity(
      uuid,
      disabled
        ? 'SET disabled = :d ADD generation :one REMOVE httpCookie, httpCookieExpiresAt'
        : 'SET disabled = :d',
      disabled ? { ':d': disabled, ':one': 1 } : { ':d': disabled },
    );
    if (disabled) {
      await this.deleteRegistration(uuid);
      await this.noteChange(uuid);
    }
  }

  /**
   * Replaces an identity's TOTP secret and ends everything made with the old one: the CONNECT
   * cookie, the registration and its cookie record (so the cookie no longer looks up or parks),
   * and — through the bumped generation the relays re-check — HTTP parks. Replay protection stays.
   * The identity is updated before the registration is deleted, so a registration racing with the
   * rotation either sees the new generation (and withdraws itself) or is deleted here.
   */
  async rotateSecret(uuid: string, params: TotpParams, compat?: TotpCompat): Promise<void> {
    // The code parameters go with the secret: a strict rotation of an imported identity drops
    // its compatibility settings; a forced re-import sets them.
    await this.updateIdentity(
      uuid,
      `SET secret = :s, digits = :d, step = :st, algorithm = :a${
        compat ? ', compat = :c' : ''
      } ADD generation :one REMOVE httpCookie, httpCookieExpiresAt${compat ? '' : ', compat'}`,
      {
        ':s': params.secret,
        ':d': params.digits,
        ':st': params.step,
        ':a': params.algorithm,
        ':one': 1,
        ...(compat ? { ':c': compat } : {}),
      },
    );
    await this.deleteRegistration(uuid);
    await this.noteChange(uuid);
  }

  /**
   * Sets (or, with undefined, removes) an identity's compatibility settings and the informative
   * `digits` that goes with them. Registrations stand; new rules apply from the next code checked.
   */
  async setCompat(uuid: string, compat: TotpCompat | undefined, digits: number): Promise<void> {
    await this.updateIdentity(
      uuid,
      compat ? 'SET compat = :c, digits = :d' : 'SET digits = :d REMOVE compat',
      compat ? { ':c': compat, ':d': digits } : { ':d': digits },
    );
  }

  /** Deletes an identity, its registration and its last-rendezvous record. */
  async deleteIdentity(uuid: string): Promise<void> {
    await this.deleteRegistration(uuid);
    await this.call(() =>
      this.doc.send(new DeleteCommand({ TableName: this.table, Key: { pk: serverKey(uuid), sk: 'LAST' } })),
    );
    await this.call(() =>
      this.doc.send(
        new DeleteCommand({ TableName: this.table, Key: { pk: serverKey(uuid), sk: 'IDENTITY' } }),
      ),
    );
    await this.noteChange(uuid);
  }

  /**
   * Deletes the uuid's registration and its cookie record; with `onlyCookie`, only while that is
   * still the current cookie (a registration withdrawing itself must not delete a newer one).
   */
  async deleteRegistration(uuid: string, onlyCookie?: string): Promise<void> {
    let old: Registration | undefined;
    try {
      const out = await this.call(() =>
        this.doc.send(
          new DeleteCommand({
            TableName: this.table,
            Key: { pk: serverKey(uuid), sk: 'REGISTRATION' },
            ReturnValues: 'ALL_OLD',
            ...(onlyCookie === undefined
              ? {}
              : { ConditionExpression: 'cookie = :c', ExpressionAttributeValues: { ':c': onlyCookie } }),
          }),
        ),
      );
      old = out.Attributes as Registration | undefined;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return;
      throw err;
    }
    if (old?.cookie) {
      await this.call(() =>
        this.doc.send(
          new DeleteCommand({ TableName: this.table, Key: { pk: cookieKey(old.cookie), sk: 'COOKIE' } }),
        ),
      );
      await this.noteChange(uuid);
    }
  }

  /**
   * Records that `uuid`'s cookie or identity changed, after the change itself is written (a relay
   * that reads the notice then reads the new state). Relays read the notices once per pass and
   * re-check only the keys of those uuids; a notice lost to a crash right here is caught by the
   * relays' slow sweep of every parked key.
   */
  async noteChange(uuid: string, nowMs: number = Date.now()): Promise<void> {
    await this.call(() =>
      this.doc.send(
        new PutCommand({
          TableName: this.table,
          Item: {
            pk: CHANGES_PK,
            sk: `${changeSk(nowMs)}#${Math.random().toString(36).slice(2, 10)}`,
            uuid,
            expiresAt: Math.floor(nowMs / 1000) + CHANGE_TTL_SECONDS,
          },
        }),
      ),
    );
  }

  /** Change notices stamped at or after `sinceMs`, oldest first (one query; a page of up to 1 MB). */
  async changesSince(sinceMs: number): Promise<ChangeNotice[]> {
    const out: ChangeNotice[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const page = await this.call(() =>
        this.doc.send(
          new QueryCommand({
            TableName: this.table,
            KeyConditionExpression: 'pk = :pk AND sk >= :since',
            ExpressionAttributeValues: { ':pk': CHANGES_PK, ':since': changeSk(Math.max(0, sinceMs)) },
            ConsistentRead: true,
            ExclusiveStartKey: start,
          }),
        ),
      );
      for (const item of page.Items ?? []) {
        const id = String(item.sk);
        out.push({ id, uuid: String(item.uuid), at: Number(id.split('#')[0]) });
      }
      start = page.LastEvaluatedKey;
    } while (start);
    return out;
  }

  /** The uuid's registration even when expired (operator console: "last registration"). */
  async getRegistrationRecord(uuid: string): Promise<Registration | undefined> {
    return this.getItem<Registration>(serverKey(uuid), 'REGISTRATION');
  }
}
