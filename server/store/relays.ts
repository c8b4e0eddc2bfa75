/**
 * Relay heartbeats: each relay says it is alive every few seconds, so a reader can tell a park
 * record of a live relay from one a crashed relay left behind (park records live 15 minutes
 * without a refresh, to keep their write cost low; a heartbeat is one write per relay, not per
 * key). The operator console reads them; a relay that stops cleanly marks itself dead at once.
 */
import { relayHeartbeatKey } from './keys.js';
import { PARK_RECORD_TTL_SECONDS } from './parks.js';
import type { Table } from './table.js';

/** A relay's newest heartbeat. */
export interface RelayHeartbeat {
  relayId: string;
  /** When it was written, epoch ms. */
  at: number;
  /** Epoch ms until which the relay counts as alive (a few missed beats are tolerated). */
  liveUntil: number;
}

/**
 * Whether the relay of a park record is alive at `nowMs`: its heartbeat has not lapsed. A relay
 * with no heartbeat at all (a version before heartbeats, during a rolling deploy) is trusted.
 */
export function relayAlive(beat: RelayHeartbeat | undefined, nowMs: number = Date.now()): boolean {
  return beat === undefined || beat.liveUntil > nowMs;
}

/** The heartbeats of one table. */
export class RelayHeartbeats {
  constructor(private readonly table: Table) {}

  /** Records that `relayId` is alive until `liveUntil` (epoch ms). */
  async put(relayId: string, liveUntil: number, nowMs: number = Date.now()): Promise<void> {
    await this.table.put({
      Item: {
        ...relayHeartbeatKey(relayId),
        relayId,
        at: nowMs,
        liveUntil,
        // Outlives every park record the relay wrote, so a crashed relay's records never outlast
        // the proof that it is dead (then they would be trusted again).
        expiresAt: Math.ceil(liveUntil / 1000) + PARK_RECORD_TTL_SECONDS + 60,
      },
    });
  }

  /** The heartbeats of `relayIds` (a relay without one is absent from the map). */
  async get(relayIds: Iterable<string>): Promise<Map<string, RelayHeartbeat>> {
    const ids = [...new Set(relayIds)];
    const found = await Promise.all(
      ids.map((id) => {
        const { pk, sk } = relayHeartbeatKey(id);
        return this.table.get<RelayHeartbeat>(pk, sk);
      }),
    );
    const beats = new Map<string, RelayHeartbeat>();
    found.forEach((b, i) => {
      if (b) beats.set(ids[i] as string, { relayId: b.relayId, at: b.at, liveUntil: b.liveUntil });
    });
    return beats;
  }
}
