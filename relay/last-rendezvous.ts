/**
 * Each uuid's last rendezvous in the store, for the operator console: the relay holding the hidden
 * server's socket hands every rendezvous end here (`RelayOptions.onRendezvousEnd`). Writes are
 * coalesced per uuid: the first end is written at once, later ones within COALESCE_MS wait and only
 * the newest per protocol is written when the period ends, so a busy uuid costs the store at most
 * one write per COALESCE_MS however many rendezvous it has.
 */
import { type Log, LogBudget } from '../core/log.js';
import type { LastRendezvous, LastRendezvousRecord, ParkKind, Store } from '../server/store/index.js';
import type { ParkOrigin } from './park-records.js';
import type { RendezvousSummary } from './telemetry.js';

/** At most one last-rendezvous write per uuid per this period. */
export const LAST_RENDEZVOUS_COALESCE_MS = 10_000;

interface UuidState {
  /** When this uuid's item was last written (epoch ms). */
  wroteAt: number;
  /** Ends not written yet, newest per protocol. */
  pending: LastRendezvous;
  timer?: NodeJS.Timeout;
}

/** Where the writer writes, what it writes with each record, and its period. */
export interface LastRendezvousOptions {
  store: Pick<Store, 'putLastRendezvous'>;
  /** This relay's public addresses and region (read at each write: filled in once it listens). */
  origin: ParkOrigin;
  log: Log;
  /** At most one write per uuid per this period (default LAST_RENDEZVOUS_COALESCE_MS). */
  coalesceMs?: number;
  /** The clock (tests pass a fake one). */
  now?: () => number;
}

/** Writes each uuid's last rendezvous per protocol, coalesced. */
export class LastRendezvousWriter {
  private readonly uuids = new Map<string, UuidState>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly budget = new LogBudget(5);
  private closed = false;
  private readonly store: LastRendezvousOptions['store'];
  private readonly origin: ParkOrigin;
  private readonly log: Log;
  private readonly coalesceMs: number;
  private readonly now: () => number;

  constructor(opts: LastRendezvousOptions) {
    this.store = opts.store;
    this.origin = opts.origin;
    this.log = opts.log;
    this.coalesceMs = opts.coalesceMs ?? LAST_RENDEZVOUS_COALESCE_MS;
    this.now = opts.now ?? Date.now;
  }

  /** One rendezvous ended (the `onRendezvousEnd` hook). */
  note(s: RendezvousSummary): void {
    if (this.closed || !s.uuid) return;
    const kind: ParkKind = s.protocol;
    const at = s.startedAt + s.durationMs;
    const record: LastRendezvousRecord = {
      at,
      end: s.end,
      bytesToHidden: s.bytesToHidden,
      bytesToMobile: s.bytesToMobile,
      durationMs: s.durationMs,
      hops: s.hops,
      relayId: s.relayId,
    };
    const address = kind === 'http' ? this.origin.httpAddress : this.origin.address;
    if (address) record.address = address;
    if (this.origin.region) record.region = this.origin.region;
    if (s.mobileRelayId && s.mobileRelayId !== s.relayId) record.mobileRelayId = s.mobileRelayId;
    if (s.reason) record.reason = s.reason;

    let state = this.uuids.get(s.uuid);
    if (!state) {
      state = { wroteAt: -Infinity, pending: {} };
      this.uuids.set(s.uuid, state);
    }
    const older = state.pending[kind];
    if (!older || older.at <= at) state.pending[kind] = record;
    if (state.timer) return;
    const wait = state.wroteAt + this.coalesceMs - this.now();
    if (wait <= 0) this.flushOne(s.uuid, state);
    else this.schedule(s.uuid, state, wait);
  }

  /** Writes every pending end now and stops (drain); waits for the writes at most `waitMs`. */
  async close(waitMs = 2_000): Promise<void> {
    this.closed = true;
    for (const [uuid, state] of this.uuids) {
      clearTimeout(state.timer);
      state.timer = undefined;
      if (Object.keys(state.pending).length) this.flushOne(uuid, state);
    }
    this.uuids.clear();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(this.inFlight),
      new Promise((r) => {
        timer = setTimeout(r, waitMs);
      }),
    ]);
    clearTimeout(timer);
  }

  private schedule(uuid: string, state: UuidState, wait: number): void {
    state.timer = setTimeout(() => {
      state.timer = undefined;
      if (Object.keys(state.pending).length) this.flushOne(uuid, state);
      // Nothing pending a whole period after the last write: forget the uuid.
      else this.uuids.delete(uuid);
    }, wait);
    state.timer.unref();
  }

  private flushOne(uuid: string, state: UuidState): void {
    const last = state.pending;
    state.pending = {};
    state.wroteAt = this.now();
    const job = this.store
      .putLastRendezvous(uuid, last)
      .catch((err) => {
        // The console misses one figure; the rendezvous itself is long done. Bounded logging.
        const slot = this.budget.take('write');
        if (slot.ok)
          this.log.warn('last rendezvous write failed', {
            uuid,
            reason: (err as Error).message,
            suppressed: slot.suppressed || undefined,
          });
      })
      .finally(() => this.inFlight.delete(job));
    this.inFlight.add(job);
    // The trailing window: ends arriving now wait for it; an empty one forgets the uuid.
    if (!this.closed) this.schedule(uuid, state, this.coalesceMs);
  }
}
