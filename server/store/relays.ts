/**
 * Relay heartbeats: one item per relay, rewritten every RELAY_HEARTBEAT_MS (relay/park-records.ts),
 * saying until when the relay counts as alive. Readers (look-ups, peers' dials, the console) judge
 * every park record by its relay's heartbeat — not by the record's own expiry, which is only the
 * store's garbage collection (days) — so the store's cost of liveness is one write per relay per
 * beat, however many keys the relay holds, and a relay that died without draining stops being
 * named once its `liveUntil` passes. A relay that stops cleanly marks itself dead at once.
 */
import { relayHeartbeatKey } from './keys.js';
import { PARK_RECORD_TTL_SECONDS } from './parks.js';
import type { Table } from './table.js';

/** A relay's newest heartbeat. */
export interface RelayHeartbeat {
  relayId: string;
  /** When it was written, epoch ms. */
  at: number;
  /** Epoch ms until which the relay counts as alive (a late beat is tolerated). */
  liveUntil: number;
}

/**
 * Whether a relay is alive at `nowMs`: its heartbeat has not lapsed. A relay with no heartbeat
 * item counts as dead (every release since heartbeats were introduced writes one before it parks
 * anything, and the item outlives the relay's park records).
 */
export function relayAlive(beat: RelayHeartbeat | undefined, nowMs: number = Date.now()): boolean {
  return beat !== undefined && beat.liveUntil > nowMs;
}

/** How long a read heartbeat serves in-process, per relay id (a hot key costs no read per look). */
export const HEARTBEAT_CACHE_MS = 3_000;

/** The heartbeats of one table. */
export class RelayHeartbeats {
  private readonly cache = new Map<string, { beat?: RelayHeartbeat; until: number }>();
  private readonly inFlight = new Map<string, Promise<RelayHeartbeat | undefined>>();

  constructor(private readonly table: Table) {}

  /** Records that `relayId` is alive until `liveUntil` (epoch ms). */
  async put(relayId: string, liveUntil: number, nowMs: number = Date.now()): Promise<void> {
    await this.table.put({
      Item: {
        ...relayHeartbeatKey(relayId),
        relayId,
        at: nowMs,
        liveUntil,
        // Garbage collection only: outlives every park record the relay wrote (those live
        // PARK_RECORD_TTL_SECONDS past their last write), so a dead relay's records are gone first.
        expiresAt: Math.ceil(liveUntil / 1000) + PARK_RECORD_TTL_SECONDS + 3_600,
      },
    });
  }

  private read(id: string): Promise<RelayHeartbeat | undefined> {
    const { pk, sk } = relayHeartbeatKey(id);
    return this.table
      .get<RelayHeartbeat>(pk, sk)
      .then((b) => (b ? { relayId: b.relayId, at: b.at, liveUntil: b.liveUntil } : undefined));
  }

  /** The heartbeats of `relayIds`, read now (a relay without one is absent from the map). */
  async get(relayIds: Iterable<string>): Promise<Map<string, RelayHeartbeat>> {
    const ids = [...new Set(relayIds)];
    const found = await Promise.all(ids.map((id) => this.read(id)));
    const beats = new Map<string, RelayHeartbeat>();
    found.forEach((b, i) => {
      if (b) beats.set(ids[i] as string, b);
    });
    return beats;
  }

  /**
   * The heartbeats of `relayIds` through an in-process cache: a beat read within
   * HEARTBEAT_CACHE_MS serves — but never past its own `liveUntil` (then it is read again, so a
   * late beat is not taken for a death) — and concurrent reads of one relay share one request.
   */
  async cached(relayIds: Iterable<string>, nowMs: number = Date.now()): Promise<Map<string, RelayHeartbeat>> {
    const ids = [...new Set(relayIds)];
    const found = await Promise.all(
      ids.map((id) => {
        const hit = this.cache.get(id);
        if (hit && hit.until > nowMs) return hit.beat;
        let p = this.inFlight.get(id);
        if (!p) {
          p = this.read(id).then(
            (beat) => {
              this.inFlight.delete(id);
              const now = Date.now();
              const until = now + HEARTBEAT_CACHE_MS;
              if (this.cache.size > 10_000) this.cache.clear();
              this.cache.set(id, {
                beat,
                until: beat && beat.liveUntil > now ? Math.min(until, beat.liveUntil) : until,
              });
              return beat;
            },
            (err) => {
              this.inFlight.delete(id);
              throw err;
            },
          );
          this.inFlight.set(id, p);
        }
        return p;
      }),
    );
    const beats = new Map<string, RelayHeartbeat>();
    found.forEach((b, i) => {
      if (b) beats.set(ids[i] as string, b);
    });
    return beats;
  }
}
