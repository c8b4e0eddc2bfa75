/**
 * Bandwidth leases (issue 30): how the relays carrying one capped identity's traffic learn of each
 * other and split its cap (relay/bandwidth.ts). Each such relay rewrites its own lease item every
 * few seconds, only while it carries that identity's capped traffic, and reads the identity's
 * leases in the same refresh: one write and one query per (identity, relay) per refresh. An idle
 * identity has no lease and costs nothing; a relay that stops carrying it deletes its lease, and a
 * relay that died leaves one that readers ignore once its `liveUntil` passes (the TTL attribute
 * only collects it later).
 */
import { bandwidthLeaseKeys } from './keys.js';
import type { Table } from './table.js';

/** One relay's lease on a share of one identity's bandwidth cap. */
export interface BandwidthLease {
  relayId: string;
  /** Bytes per second this relay carried for the identity over its last refresh period. */
  used: number;
  /** True when this relay's throttle held bytes back in that period (it wants more than it had). */
  limited: boolean;
  /** Epoch ms after which readers ignore the lease (the relay stopped refreshing it). */
  liveUntil: number;
}

/** Bandwidth leases of one table. */
export class BandwidthLeases {
  constructor(private readonly table: Table) {}

  /**
   * Writes this relay's lease for `uuid` and reads the identity's live leases (the write and the
   * query run side by side, so the answer may miss the write: the caller knows its own lease).
   */
  async refresh(uuid: string, lease: BandwidthLease, nowMs: number = Date.now()): Promise<BandwidthLease[]> {
    const { pk, sk } = bandwidthLeaseKeys(uuid, lease.relayId);
    const [, items] = await Promise.all([
      this.table.put({
        Item: {
          pk,
          sk,
          relayId: lease.relayId,
          used: Math.round(lease.used),
          limited: lease.limited,
          liveUntil: lease.liveUntil,
          // Garbage collection only (DynamoDB deletes expired items within days); readers go by liveUntil.
          expiresAt: Math.ceil(lease.liveUntil / 1000) + 3_600,
        },
      }),
      // Eventually consistent (half the read units): a lease a second old splits the cap as well.
      this.table.queryPage({
        KeyConditionExpression: 'pk = :pk',
        ExpressionAttributeValues: { ':pk': pk },
      }),
    ]);
    const live: BandwidthLease[] = [];
    for (const item of items) {
      const liveUntil = Number(item.liveUntil);
      if (!(liveUntil > nowMs)) continue;
      live.push({
        relayId: String(item.relayId),
        used: Number(item.used) || 0,
        limited: item.limited === true,
        liveUntil,
      });
    }
    return live;
  }

  /** Deletes this relay's lease for `uuid` (it stopped carrying the identity's traffic). */
  async drop(uuid: string, relayId: string): Promise<void> {
    const { pk, sk } = bandwidthLeaseKeys(uuid, relayId);
    await this.table.delete({ Key: { pk, sk } });
  }
}
