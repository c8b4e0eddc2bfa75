/**
 * The state store: one DynamoDB table (`pk`/`sk`, TTL attribute `expiresAt`). This is the only
 * module that imports the DynamoDB SDK. Every write is a single-item (conditional) write, so it
 * runs on DynamoDB, DynamoDB Local and dynalite alike; SDK errors leave here as typed errors.
 *
 *   SERVER#<uuid> / IDENTITY       secret, digits, step, algorithm, label, lastStep, failures
 *   SERVER#<uuid> / REGISTRATION   current cookie, relay host/port, region, expiresAt
 *   COOKIE#<c>    / COOKIE         uuid, expiresAt
 *   COOKIE#<c>    / PARK#<relay>   a relay holding generic-protocol sockets parked with <c>
 *   SERVER#<uuid> / HTTPPARK#<relay>  a relay holding HTTP-protocol (CONNECT) sockets of <uuid>
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
import { isLive, secretsEqual } from './cookies.js';
import { RendezvousError, storeUnavailable } from './errors.js';
import type { TotpParams } from './totp.js';

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
  failCount?: number;
  /** Epoch seconds when the current failure window began. */
  failWindowStart?: number;
  disabled?: boolean;
}

/** Where a hidden server is registered now. */
export interface Registration {
  uuid: string;
  cookie: string;
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
}

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

const serverKey = (uuid: string) => `SERVER#${uuid}`;
const cookieKey = (cookie: string) => `COOKIE#${cookie}`;

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
  private readonly raw: DynamoDBClient;
  private readonly doc: DynamoDBDocumentClient;

  constructor(opts: StoreOptions) {
    this.table = opts.table;
    const endpoint = opts.endpoint ?? process.env.AWS_ENDPOINT_URL_DYNAMODB;
    const local = isLoopback(endpoint);
    const hasCreds = Boolean(process.env.AWS_ACCESS_KEY_ID || process.env.AWS_PROFILE);
    this.raw = new DynamoDBClient({
      endpoint,
      region: opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
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
      if (!(err instanceof ResourceInUseException)) throw storeUnavailable(err);
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
      throw storeUnavailable(err);
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
  ): Promise<boolean> {
    try {
      await this.call(() =>
        this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key: { pk: serverKey(uuid), sk: 'IDENTITY' },
            UpdateExpression: `SET lastStep = :step, lastStepBy = :by, failCount = :zero${
              httpCookie ? ', httpCookie = :hc, httpCookieExpiresAt = :hce' : ''
            }`,
            ConditionExpression:
              'attribute_exists(pk) AND (attribute_not_exists(lastStep) OR lastStep < :step) AND (attribute_not_exists(disabled) OR disabled = :false)',
            ExpressionAttributeValues: {
              ':step': step,
              ':by': by,
              ':zero': 0,
              ':false': false,
              ...(httpCookie ? { ':hc': httpCookie.cookie, ':hce': httpCookie.expiresAt } : {}),
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

  /** Counts a failed attempt in the current window (starting a new window when it lapsed). */
  async recordFailure(uuid: string, nowSec: number, windowSec: number): Promise<void> {
    const Key = { pk: serverKey(uuid), sk: 'IDENTITY' };
    try {
      await this.call(() =>
        this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key,
            UpdateExpression: 'ADD failCount :one',
            ConditionExpression: 'attribute_exists(pk) AND failWindowStart > :cutoff',
            ExpressionAttributeValues: { ':one': 1, ':cutoff': nowSec - windowSec },
          }),
        ),
      );
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
      try {
        await this.call(() =>
          this.doc.send(
            new UpdateCommand({
              TableName: this.table,
              Key,
              UpdateExpression: 'SET failCount = :one, failWindowStart = :now',
              ConditionExpression: 'attribute_exists(pk)',
              ExpressionAttributeValues: { ':one': 1, ':now': nowSec },
            }),
          ),
        );
      } catch (inner) {
        if (!(inner instanceof ConditionalCheckFailedException)) throw inner;
      }
    }
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
    return out.Attributes as Registration | undefined;
  }

  /** The uuid's live registration, or undefined (missing or expired). */
  async getRegistration(uuid: string, nowMs: number = Date.now()): Promise<Registration | undefined> {
    const reg = await this.getRegistrationRecord(uuid);
    if (!reg || !isLive(reg.expiresAt, nowMs)) return undefined;
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
    // No registration at all: the identity was disabled or deleted by the operator.
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
    await this.updateIdentity(uuid, disabled ? 'SET disabled = :d REMOVE httpCookie' : 'SET disabled = :d', {
      ':d': disabled,
    });
    if (disabled) await this.deleteRegistration(uuid);
  }

  /** Replaces an identity's TOTP secret (and drops its CONNECT cookie); replay protection stays. */
  async rotateSecret(uuid: string, secret: string): Promise<void> {
    await this.updateIdentity(uuid, 'SET secret = :s REMOVE httpCookie, httpCookieExpiresAt', {
      ':s': secret,
    });
  }

  /** Deletes an identity and its registration. */
  async deleteIdentity(uuid: string): Promise<void> {
    await this.deleteRegistration(uuid);
    await this.call(() =>
      this.doc.send(
        new DeleteCommand({ TableName: this.table, Key: { pk: serverKey(uuid), sk: 'IDENTITY' } }),
      ),
    );
  }

  private async deleteRegistration(uuid: string): Promise<void> {
    await this.call(() =>
      this.doc.send(
        new DeleteCommand({ TableName: this.table, Key: { pk: serverKey(uuid), sk: 'REGISTRATION' } }),
      ),
    );
  }

  /** The uuid's registration even when expired (operator console: "last registration"). */
  async getRegistrationRecord(uuid: string): Promise<Registration | undefined> {
    return this.getItem<Registration>(serverKey(uuid), 'REGISTRATION');
  }
}
