/**
 * The claims-region record (`SERVICE` / `CLAIMS_REGION`): which region's replica every region
 * claims one-time codes on and counts guesses on, when an operator has moved it away from the
 * deployed one (`rendezvous claims-region`). Read from each region's own replica, so a region
 * learns of a move even while the old claims region is down.
 */
import { claimsRegionKey } from './keys.js';
import type { Table } from './table.js';

/** Where codes are claimed, as an operator set it. */
export interface ClaimsRegionRecord {
  region: string;
  /** When it was set (epoch ms of the writer's clock). */
  movedAt: number;
}

/** The claims-region record of one table (one replica). */
export class ClaimsRegions {
  constructor(private readonly table: Table) {}

  /** The record on this replica, or undefined (the deployed claims region applies). */
  async get(): Promise<ClaimsRegionRecord | undefined> {
    const { pk, sk } = claimsRegionKey;
    const item = await this.table.get<ClaimsRegionRecord>(pk, sk);
    return item && typeof item.region === 'string'
      ? { region: item.region, movedAt: Number(item.movedAt) }
      : undefined;
  }

  /** Writes the record on this replica (global-table replication carries it to the others). */
  async set(region: string, nowMs: number = Date.now()): Promise<void> {
    await this.table.put({ Item: { ...claimsRegionKey, region, movedAt: nowMs } });
  }
}
