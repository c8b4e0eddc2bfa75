/**
 * The limits an operator set on each identity (issue 30: monthly quota, bandwidth, concurrent
 * rendezvous), as one relay knows them: read from the identity item once per uuid, shared by
 * concurrent readers, kept until a change notice names the uuid (relay/revalidate.ts calls
 * `onNotice`) or LIMITS_MAX_AGE_MS passes. The max age only heals a notice this relay missed (its
 * reads of the notices failed for longer than their overlap): changes normally arrive by notice
 * within one revalidation round. Only uuids this relay has read cost a re-read on a notice; an
 * identity no rendezvous touches costs nothing.
 *
 * The quota check adds the month's total from the store (`monthBytes`, cached per capped uuid for
 * MONTH_TOTAL_TTL_MS) to what this relay counted and has not flushed yet (`localBytes`). An
 * identity without a quota costs no usage read at all.
 */
import { quotaExceeded } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { Store } from '../server/store/index.js';
import type { IdentityLimits } from '../server/usage-types.js';

/** Limits read longer ago than this are read again at the next use (a missed notice heals). */
export const LIMITS_MAX_AGE_MS = 180_000;
/** After a failed read, the last known limits are used this long before the store is asked again. */
export const LIMITS_RETRY_MS = 10_000;
/** A capped identity's month total is read at most once per this long per relay. */
export const MONTH_TOTAL_TTL_MS = 5_000;
/** Uuids whose limits (and month totals) are kept; beyond it the longest-unread are dropped. */
export const LIMITS_MAX_ENTRIES = 10_000;

/** What the cache reads; `monthBytes` is the store's month total of an identity (issue 30). */
export type LimitsStore = Pick<Store, 'getIdentity'> & {
  monthBytes?: (uuid: string, nowMs?: number) => Promise<number>;
};

/** How the cache is built. */
export interface IdentityLimitsOptions {
  store: LimitsStore;
  /** Bytes this relay counted for `uuid` and has not flushed to the store yet (default: none). */
  localBytes?: (uuid: string) => number;
  log?: Log;
  /** Clock (tests). */
  now?: () => number;
  maxAgeMs?: number;
  monthTotalTtlMs?: number;
  maxEntries?: number;
}

interface Entry {
  limits: IdentityLimits | undefined;
  /** When to read again (max age, or the retry after a failure). */
  until: number;
}

interface MonthTotal {
  bytes: number;
  /** YYYY-MM (UTC): kept through an outage within its month only. */
  month: string;
  /** Read again from then (at the latest when the month ends). */
  until: number;
}

/** Per-identity limits on one relay (`ctx.identityLimits`). */
export class IdentityLimitsCache {
  /** Bytes counted here and not yet in the store (wired to the meter's `unflushedBytes`). */
  localBytes: (uuid: string) => number;
  private readonly store: LimitsStore;
  private readonly now: () => number;
  private readonly maxAgeMs: number;
  private readonly monthTtlMs: number;
  private readonly maxEntries: number;
  private readonly log?: Log;
  private readonly entries = new Map<string, Entry>();
  private readonly reading = new Map<string, Promise<IdentityLimits | undefined>>();
  private readonly months = new Map<string, MonthTotal>();
  private readonly monthReads = new Map<string, Promise<number>>();
  /** Bytes this relay wrote while a month read was in flight: that read may have missed them. */
  private readonly writtenDuringRead = new Map<string, number>();
  private readonly listeners: Array<(uuid: string, limits: IdentityLimits | undefined) => void> = [];

  constructor(opts: IdentityLimitsOptions) {
    this.store = opts.store;
    this.localBytes = opts.localBytes ?? (() => 0);
    this.log = opts.log;
    this.now = opts.now ?? Date.now;
    this.maxAgeMs = opts.maxAgeMs ?? LIMITS_MAX_AGE_MS;
    this.monthTtlMs = opts.monthTotalTtlMs ?? MONTH_TOTAL_TTL_MS;
    this.maxEntries = opts.maxEntries ?? LIMITS_MAX_ENTRIES;
  }

  /** The cached limits of `uuid` (undefined: none, or not read yet); never reads the store. */
  peek(uuid: string): IdentityLimits | undefined {
    return this.entries.get(uuid)?.limits;
  }

  /** True when `uuid`'s limits are cached, fresh and not being read again (`peek` is the answer). */
  fresh(uuid: string): boolean {
    const e = this.entries.get(uuid);
    return e !== undefined && e.until > this.now() && !this.reading.has(uuid);
  }

  /**
   * Takes limits another reader of the identity item just read (the relay's name check, the
   * revalidation's re-check after a notice), so the same identity is not read twice. A uuid
   * cached fresh is left as it is unless `newer` (a read made after a change notice).
   */
  prime(uuid: string, limits: IdentityLimits | undefined, newer = false): void {
    if (newer || !this.fresh(uuid)) this.set(uuid, normalise(limits), this.maxAgeMs);
  }

  /**
   * The limits of `uuid`: cached, or read once (concurrent callers share the read). A read in
   * flight (a notice's) is newer than the cache, so it is the answer.
   */
  get(uuid: string): Promise<IdentityLimits | undefined> {
    const pending = this.reading.get(uuid);
    if (pending) return pending;
    const e = this.entries.get(uuid);
    if (e && e.until > this.now()) return Promise.resolve(e.limits);
    return this.read(uuid);
  }

  /**
   * A change notice named `uuid`: its limits are read again if this relay has them cached (the
   * old ones serve until the answer). A uuid never read here costs nothing.
   */
  onNotice(uuid: string): void {
    if (this.entries.has(uuid)) void this.read(uuid);
  }

  /** Calls `cb` whenever a read finds limits different from those cached before (or any, at a first read). */
  onChange(cb: (uuid: string, limits: IdentityLimits | undefined) => void): void {
    this.listeners.push(cb);
  }

  /**
   * Whether `uuid` may start a rendezvous now, without waiting: 'ok', 'exceeded', or undefined
   * when a store read is needed first (`checkQuota`). The pairing fast path asks this.
   */
  quotaNow(uuid: string): 'ok' | 'exceeded' | undefined {
    if (!this.fresh(uuid)) return undefined;
    const quota = this.peek(uuid)?.monthlyBytes;
    if (quota === undefined) return 'ok';
    const m = this.months.get(uuid);
    // `until` never passes the month's end: a total of last month says nothing of this one.
    if (!m || m.until <= this.now()) return undefined;
    return m.bytes + this.localBytes(uuid) >= quota ? 'exceeded' : 'ok';
  }

  /** Throws QUOTA_EXCEEDED when `uuid` has a monthly quota and this month's bytes reached it. */
  async checkQuota(uuid: string): Promise<void> {
    if (await this.overQuota(uuid)) throw quotaExceeded(this.now());
  }

  /** True when `uuid` has a monthly quota and this month's bytes (stored, plus unflushed here) reached it. */
  async overQuota(uuid: string): Promise<boolean> {
    const quota = (await this.get(uuid))?.monthlyBytes;
    if (quota === undefined) return false;
    const stored = await this.monthTotal(uuid);
    return stored + this.localBytes(uuid) >= quota;
  }

  private read(uuid: string): Promise<IdentityLimits | undefined> {
    const pending = this.reading.get(uuid);
    if (pending) return pending;
    const p = this.store
      .getIdentity(uuid)
      .then(
        (identity) => {
          const limits = normalise(identity?.limits);
          this.set(uuid, limits, this.maxAgeMs);
          return limits;
        },
        (err: Error) => {
          // A dead store is no reason to refuse (or to lift) anyone's limits: the last known
          // ones stay (none when never read), as the relay keeps parks through an outage. The
          // quota is a billing bound: what an outage lets through is bounded by its length and
          // the bandwidth cap. Retried after LIMITS_RETRY_MS, not at every pairing.
          this.log?.warn('identity limits unreadable', { uuid, reason: err.message });
          const last = this.entries.get(uuid)?.limits;
          this.set(uuid, last, LIMITS_RETRY_MS);
          return last;
        },
      )
      .finally(() => this.reading.delete(uuid));
    this.reading.set(uuid, p);
    return p;
  }

  /** Caches `limits` for `ttlMs`; listeners hear of it when the uuid had other limits before. */
  private set(uuid: string, limits: IdentityLimits | undefined, ttlMs: number): void {
    const before = this.entries.get(uuid);
    // Re-inserted at the end: the map's order is the order of last reads, the oldest go first.
    this.entries.delete(uuid);
    this.entries.set(uuid, { limits, until: this.now() + ttlMs });
    evict(this.entries, this.maxEntries);
    if (limits?.monthlyBytes === undefined) this.months.delete(uuid);
    // A first read with limits is news too (a uuid read again after eviction: its running
    // rendezvous get their cap back).
    if (before === undefined ? limits !== undefined : !sameLimits(before.limits, limits))
      for (const cb of this.listeners) cb(uuid, limits);
  }

  /** How long a month total read now holds: MONTH_TOTAL_TTL_MS, but never into the next month. */
  private monthUntil(): number {
    const now = this.now();
    return Math.min(now + this.monthTtlMs, nextMonthStart(now));
  }

  /**
   * The meter wrote `bytes` of `uuid` to the store just now. They leave `localBytes` at this moment,
   * so the cached month total (read before the write) takes them, else this relay would not see
   * its own traffic until the total is read again. A read in flight may or may not have seen the
   * write: it is counted as not (a few bytes over, for a few seconds, on the refusing side).
   */
  written(uuid: string, bytes: number): void {
    if (this.monthReads.has(uuid))
      this.writtenDuringRead.set(uuid, (this.writtenDuringRead.get(uuid) ?? 0) + bytes);
    const m = this.months.get(uuid);
    if (m) m.bytes += bytes;
  }

  private monthTotal(uuid: string): Promise<number> {
    const now = this.now();
    const month = monthOf(now);
    const m = this.months.get(uuid);
    if (m && m.until > now) return Promise.resolve(m.bytes);
    const pending = this.monthReads.get(uuid);
    if (pending) return pending;
    const read = this.store.monthBytes ? this.store.monthBytes(uuid, now) : Promise.resolve(0);
    const p = read
      .then(
        (read) => {
          const bytes = read + (this.writtenDuringRead.get(uuid) ?? 0);
          this.months.delete(uuid);
          this.months.set(uuid, { bytes, month, until: this.monthUntil() });
          evict(this.months, this.maxEntries);
          return bytes;
        },
        (err: Error) => {
          // As above: an outage keeps the last known total of this month (0 when none).
          this.log?.warn('month usage unreadable', { uuid, reason: err.message });
          const last = m && m.month === month ? m.bytes : 0;
          this.months.set(uuid, { bytes: last, month, until: this.monthUntil() });
          return last;
        },
      )
      .finally(() => {
        this.monthReads.delete(uuid);
        this.writtenDuringRead.delete(uuid);
      });
    this.monthReads.set(uuid, p);
    return p;
  }
}

/** The first millisecond of the UTC month after `ms`'s. */
function nextMonthStart(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/** YYYY-MM of `ms`, UTC. */
function monthOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 7);
}

/** Undefined for no limit at all, so `peek` answers "none" one way. */
function normalise(limits: IdentityLimits | undefined): IdentityLimits | undefined {
  if (!limits) return undefined;
  const out: IdentityLimits = {};
  if (typeof limits.monthlyBytes === 'number') out.monthlyBytes = limits.monthlyBytes;
  if (typeof limits.bytesPerSecond === 'number') out.bytesPerSecond = limits.bytesPerSecond;
  if (typeof limits.maxConcurrent === 'number') out.maxConcurrent = limits.maxConcurrent;
  return Object.keys(out).length > 0 ? out : undefined;
}

function sameLimits(a: IdentityLimits | undefined, b: IdentityLimits | undefined): boolean {
  return (
    a?.monthlyBytes === b?.monthlyBytes &&
    a?.bytesPerSecond === b?.bytesPerSecond &&
    a?.maxConcurrent === b?.maxConcurrent
  );
}

function evict<V>(map: Map<string, V>, max: number): void {
  for (const key of map.keys()) {
    if (map.size <= max) return;
    map.delete(key);
  }
}
