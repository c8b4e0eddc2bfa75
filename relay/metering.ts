/**
 * Metering per identity (issue 30): bytes each way, rendezvous and connection-seconds, per
 * protocol, counted on the relay the mobile client reached (the holder of a peer-linked rendezvous
 * does not count it, so a rendezvous through two relays is counted once), coalesced in memory and
 * written to the store once per flush period: at most ONE `addUsage` per active identity per flush,
 * nothing at all for an idle one (one timer per relay, none per identity or splice).
 *
 * A long rendezvous is counted while it runs: each flush reads its splice's byte counters (the
 * sockets' own `bytesRead`, no listener per chunk) and the seconds it was live in the interval.
 * Each flush also writes one `usage` record per identity on the log (operators bill from logs too)
 * and keeps the top identities by bytes for `/metrics` (a bounded number of uuid labels).
 *
 * A failed write keeps its delta for the next flush, merged into the identity's one pending entry:
 * memory stays one entry per identity with unwritten usage, however long the store is down.
 */
import type { Log } from '../core/log.js';
import type { SpliceHandle } from '../core/splice.js';
import { emptyTotals, totalBytes, type UsageCounters, type UsageTotals } from '../server/usage-types.js';
import type { RendezvousStart } from './telemetry.js';

/** Where the meter writes: the store's `addUsage` (one UpdateItem per call). */
export interface UsageSink {
  addUsage(uuid: string, delta: UsageTotals, nowMs?: number): Promise<void>;
}

/** A meter's settings. */
export interface MeterOptions {
  store: UsageSink;
  /** This relay's id: only rendezvous whose mobile client reached this relay are counted. */
  relayId: string;
  log: Log;
  /** Flush period (default 60 s; RELAY_METER_FLUSH_MS). */
  flushMs?: number;
  /** Identities named in `/metrics` (the top by bytes over the last flush interval; default 10). */
  topN?: number;
  /** Store writes in flight at once during a flush (default 16). */
  concurrency?: number;
  /** A write of `bytes` of `uuid` succeeded (the quota check's cached month total takes them). */
  onWritten?: (uuid: string, bytes: number) => void;
}

/** Default flush period. */
export const METER_FLUSH_MS = 60_000;
/** The longest a stopping relay waits for its last flush. */
export const CLOSE_FLUSH_MS = 10_000;

/** A write the store refused for good (a bad value; the table's validation): retrying cannot help. */
function refusedForGood(err: unknown): boolean {
  if (err instanceof RangeError) return true;
  const cause = (err as { cause?: { name?: string } } | undefined)?.cause;
  return cause?.name === 'ValidationException';
}

/** A metered live splice: what it had carried at the last read. */
interface LiveEntry {
  uuid: string;
  protocol: keyof UsageTotals;
  handle: SpliceHandle;
  /** Bytes read from the hidden side (→ mobile) and the mobile side (→ hidden) already counted. */
  fromA: number;
  fromB: number;
  /** When its seconds were last counted. */
  since: number;
}

/** The usage of the identities whose mobile clients reached this relay, flushed periodically. */
export class Meter {
  /** Usage accrued since the last flush (logged once, at that flush). */
  private fresh = new Map<string, UsageTotals>();
  /** Usage whose store write failed, merged per identity until a write succeeds. */
  private readonly unwritten = new Map<string, UsageTotals>();
  /** Usage being written now (still unflushed until the store answers). */
  private readonly writing = new Map<string, UsageTotals>();
  private readonly live = new Map<string, Set<LiveEntry>>();
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private top: Array<{ uuid: string; bytes: number }> = [];
  private writeFailures = 0;
  private writes = 0;
  private stopped = false;
  private busy = false;

  constructor(private readonly opts: MeterOptions) {
    // A floor (a zero period would spin). A tick while a flush still waits on the store is skipped: a slow store never queues flushes.
    this.timer = setInterval(
      () => {
        if (!this.busy) void this.flush();
      },
      Math.max(50, opts.flushMs ?? METER_FLUSH_MS),
    );
    this.timer.unref();
  }

  /**
   * A splice began: counted when its mobile client reached this relay (`source` set, this relay
   * the mobile one). Returns what to call at its end (undefined when not metered here).
   */
  begin(r: RendezvousStart, handle: SpliceHandle): (() => void) | undefined {
    if (this.stopped || r.source === undefined || r.mobileRelayId !== this.opts.relayId) return undefined;
    const c = this.counters(this.fresh, r.uuid, r.protocol);
    c.rendezvous++;
    // The early bytes / HTTP head went to the hidden side before the splice's counters started.
    c.bytesToHidden += r.toHiddenBefore;
    const e: LiveEntry = {
      uuid: r.uuid,
      protocol: r.protocol,
      handle,
      fromA: 0,
      fromB: 0,
      since: Date.now(),
    };
    let set = this.live.get(r.uuid);
    if (!set) {
      set = new Set();
      this.live.set(r.uuid, set);
    }
    set.add(e);
    return () => {
      this.accrue(e, Date.now());
      set.delete(e);
      if (set.size === 0 && this.live.get(e.uuid) === set) this.live.delete(e.uuid);
    };
  }

  /** Bytes counted on this relay for `uuid` not yet in the store (live splices' included). */
  unflushedBytes(uuid: string): number {
    let n = 0;
    const fresh = this.fresh.get(uuid);
    if (fresh) n += totalBytes(fresh);
    const unwritten = this.unwritten.get(uuid);
    if (unwritten) n += totalBytes(unwritten);
    const writing = this.writing.get(uuid);
    if (writing) n += totalBytes(writing);
    for (const e of this.live.get(uuid) ?? []) {
      const b = e.handle.bytes();
      n += b.fromA - e.fromA + b.fromB - e.fromB;
    }
    return n;
  }

  /** Identities with usage not yet written (bounded by the identities that were active). */
  get pendingIdentities(): number {
    return new Set([...this.fresh.keys(), ...this.unwritten.keys(), ...this.writing.keys()]).size;
  }

  /**
   * Counts the live splices up to now, logs one `usage` record per identity with fresh usage, and
   * writes each identity's delta in one store call; a failed write is kept for the next flush.
   * Flushes never overlap (a call during one runs after it).
   */
  flush(): Promise<void> {
    this.busy = true;
    // Never rejects, so one failed flush cannot stop the ones chained after it.
    const run = this.flushing
      .then(() => this.flushOnce())
      .catch((err) => this.opts.log.error('usage flush failed', { error: String(err).slice(0, 200) }));
    this.flushing = run;
    const done = () => {
      if (this.flushing === run) this.busy = false;
    };
    void run.then(done);
    return run;
  }

  /** Stops the timer and flushes what is left (the drain calls it after the splices ended). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    // Bounded: a store that does not answer must not hold the drain past its grace (ECS kills
    // the task then); what it did not take is in the `usage` records already logged.
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.opts.log.error('usage not written at stop', {
          identities: this.unwritten.size + this.writing.size,
        });
        resolve();
      }, CLOSE_FLUSH_MS);
    });
    await Promise.race([this.flush(), limit]);
    clearTimeout(timer);
    this.stopped = true;
  }

  /** `/metrics` lines: the top identities of the last interval, pending identities, failed writes. */
  prometheus(): string {
    const out = [
      '# HELP rendezvous_relay_identity_bytes Bytes (both ways) of the top identities on this relay over the last flush interval.',
      '# TYPE rendezvous_relay_identity_bytes gauge',
      ...this.top.map(
        (t, i) => `rendezvous_relay_identity_bytes{uuid="${promEscape(t.uuid)}",rank="${i + 1}"} ${t.bytes}`,
      ),
      '# HELP rendezvous_relay_usage_pending_identities Identities whose usage is not yet written to the store.',
      '# TYPE rendezvous_relay_usage_pending_identities gauge',
      `rendezvous_relay_usage_pending_identities ${this.pendingIdentities}`,
      '# HELP rendezvous_relay_usage_writes_total Usage writes to the store (one per active identity per flush).',
      '# TYPE rendezvous_relay_usage_writes_total counter',
      `rendezvous_relay_usage_writes_total ${this.writes}`,
      '# HELP rendezvous_relay_usage_write_failures_total Usage writes that failed (their delta is kept for the next flush).',
      '# TYPE rendezvous_relay_usage_write_failures_total counter',
      `rendezvous_relay_usage_write_failures_total ${this.writeFailures}`,
    ];
    return `${out.join('\n')}\n`;
  }

  private async flushOnce(): Promise<void> {
    const now = Date.now();
    for (const set of this.live.values()) for (const e of set) this.accrue(e, now);
    const fresh = this.fresh;
    this.fresh = new Map();
    const ranked: Array<{ uuid: string; bytes: number }> = [];
    for (const [uuid, t] of fresh) {
      roundSeconds(t);
      this.record(uuid, t);
      ranked.push({ uuid, bytes: totalBytes(t) });
      const pending = this.unwritten.get(uuid);
      if (pending) add(pending, t);
      else this.unwritten.set(uuid, t);
    }
    const n = this.opts.topN ?? 10;
    this.top = ranked.sort((x, y) => y.bytes - x.bytes).slice(0, n);
    const queue = [...this.unwritten.entries()];
    for (const [uuid, delta] of queue) this.writing.set(uuid, delta);
    this.unwritten.clear();
    let failed = 0;
    let firstError = '';
    const worker = async () => {
      for (let next = queue.shift(); next; next = queue.shift()) {
        const [uuid, delta] = next;
        try {
          this.writes++;
          await this.opts.store.addUsage(uuid, delta, now);
          this.writing.delete(uuid);
          this.opts.onWritten?.(uuid, totalBytes(delta));
        } catch (err) {
          this.writing.delete(uuid);
          this.writeFailures++;
          if (refusedForGood(err)) {
            // Retrying cannot help, and merging new usage into it would keep that identity unbilled
            // for good: dropped, said once (its `usage` record, already logged, still holds it).
            this.opts.log.error('usage write refused, delta dropped', {
              uuid,
              bytes: totalBytes(delta),
              error: String((err as Error).message ?? err).slice(0, 200),
            });
            continue;
          }
          if (failed++ === 0) firstError = String((err as Error).message ?? err).slice(0, 200);
          // Kept (merged with what accrued meanwhile) for the next flush: never lost, never doubled.
          const pending = this.unwritten.get(uuid);
          if (pending) add(pending, delta);
          else this.unwritten.set(uuid, delta);
        }
      }
    };
    const workers = Math.min(this.opts.concurrency ?? 16, queue.length);
    await Promise.all(Array.from({ length: workers }, worker));
    // One line per flush, not one per identity: a store outage must not flood the log.
    if (failed > 0)
      this.opts.log.warn('usage writes failed, kept for the next flush', { failed, error: firstError });
  }

  /** One `usage` record: the identity's delta of this interval, per protocol (flat fields). */
  private record(uuid: string, t: UsageTotals): void {
    this.opts.log.info('usage', {
      event: 'usage',
      uuid,
      relayId: this.opts.relayId,
      genericBytesToHidden: t.generic.bytesToHidden,
      genericBytesToMobile: t.generic.bytesToMobile,
      genericRendezvous: t.generic.rendezvous,
      genericConnectionSeconds: t.generic.connectionSeconds,
      httpBytesToHidden: t.http.bytesToHidden,
      httpBytesToMobile: t.http.bytesToMobile,
      httpRendezvous: t.http.rendezvous,
      httpConnectionSeconds: t.http.connectionSeconds,
    });
  }

  /** Moves what a live splice carried since its last read (and its seconds) into the fresh usage. */
  private accrue(e: LiveEntry, now: number): void {
    const b = e.handle.bytes();
    const c = this.counters(this.fresh, e.uuid, e.protocol);
    c.bytesToMobile += b.fromA - e.fromA;
    c.bytesToHidden += b.fromB - e.fromB;
    c.connectionSeconds += Math.max(0, now - e.since) / 1000;
    e.fromA = b.fromA;
    e.fromB = b.fromB;
    e.since = now;
  }

  private counters(m: Map<string, UsageTotals>, uuid: string, protocol: keyof UsageTotals): UsageCounters {
    let t = m.get(uuid);
    if (!t) {
      t = emptyTotals();
      m.set(uuid, t);
    }
    return t[protocol];
  }
}

/** Adds `b` into `a`. */
function add(a: UsageTotals, b: UsageTotals): void {
  for (const p of ['generic', 'http'] as const) {
    a[p].bytesToHidden += b[p].bytesToHidden;
    a[p].bytesToMobile += b[p].bytesToMobile;
    a[p].rendezvous += b[p].rendezvous;
    a[p].connectionSeconds = Math.round((a[p].connectionSeconds + b[p].connectionSeconds) * 1000) / 1000;
  }
}

/** Milliseconds precision: a sum of many float fractions would otherwise carry noise into the store. */
function roundSeconds(t: UsageTotals): void {
  for (const p of ['generic', 'http'] as const)
    t[p].connectionSeconds = Math.round(t[p].connectionSeconds * 1000) / 1000;
}

/** A Prometheus label value: backslash, quote and newline escaped. */
function promEscape(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}
