/**
 * Change notices: "this uuid's cookie or identity changed" (replaced, revoked, rotated, disabled,
 * deleted). Relays read the last seconds of them once per pass and re-check only those uuids'
 * parked keys, instead of re-reading every parked key.
 */
import { CHANGES_PK, changeSk } from './keys.js';
import type { Table } from './table.js';

/** How long a change notice is kept (relays read the last seconds of them each pass). */
export const CHANGE_TTL_SECONDS = 3_600;

/** A change notice: `uuid`'s cookie or identity changed at `at` (epoch ms of the writer's clock). */
export interface ChangeNotice {
  id: string;
  uuid: string;
  at: number;
}

/** The change notices of one table. */
export class Changes {
  constructor(private readonly table: Table) {}

  /**
   * Records that `uuid`'s cookie or identity changed, after the change itself is written (a relay
   * that reads the notice then reads the new state). Relays read the notices once per pass and
   * re-check only the keys of those uuids; a notice lost to a crash right here is caught by the
   * relays' slow sweep of every parked key.
   */
  async note(uuid: string, nowMs: number = Date.now()): Promise<void> {
    await this.table.put({
      Item: {
        pk: CHANGES_PK,
        sk: `${changeSk(nowMs)}#${Math.random().toString(36).slice(2, 10)}`,
        uuid,
        expiresAt: Math.floor(nowMs / 1000) + CHANGE_TTL_SECONDS,
      },
    });
  }

  /** Change notices stamped at or after `sinceMs`, oldest first (one query; a page of up to 1 MB). */
  async since(sinceMs: number): Promise<ChangeNotice[]> {
    const items = await this.table.queryAll({
      KeyConditionExpression: 'pk = :pk AND sk >= :since',
      ExpressionAttributeValues: { ':pk': CHANGES_PK, ':since': changeSk(Math.max(0, sinceMs)) },
      ConsistentRead: true,
    });
    return items.map((item) => {
      const id = String(item.sk);
      return { id, uuid: String(item.uuid), at: Number(id.split('#')[0]) };
    });
  }
}
