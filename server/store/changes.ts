/**
 * Change notices: "this uuid's cookie or identity changes" (replaced, revoked, rotated, disabled,
 * deleted). Relays read the last seconds of them once per round (relay/revalidate.ts) and re-check
 * only those uuids' parked keys — there is no sweep over every parked key. A notice is written
 * BEFORE the change it announces, and a relay re-checks a noticed uuid in every round while the
 * notice is young (NOTICE_WINDOW_MS), so a writer that crashes between the two loses nothing (a
 * notice without its change costs a few reads) and a notice that lands before its change (or
 * beside it: the PUT path writes both at once) is honoured when the change lands.
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
   * Records that `uuid`'s cookie or identity changes. Written before the change (or beside it):
   * relays re-check the uuid's parked keys in every round while the notice is young.
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
