/**
 * Park records (which relay holds parked sockets for a cookie or a uuid: the cluster's way of
 * finding them) and each uuid's last rendezvous per protocol (the operator console's view).
 */
import type { ParkKind } from '../../core/protocol.js';
import type { TargetState } from '../../core/relay-line.js';
import { isLive } from '../cookies.js';
import { lastRendezvousKey, parkKeys } from './keys.js';
import { type Table, withoutKeys } from './table.js';

export type { ParkKind } from '../../core/protocol.js';

/**
 * A park record's garbage-collection expiry (3 days). It says nothing about liveness: readers
 * judge a record by its relay's heartbeat (relays.ts, `Store.liveParks`). A record is written when
 * its key first parks on a relay and deleted when the last socket leaves; a relay that holds a key
 * longer rewrites the record once per PARK_RECORD_REFRESH_MS (a day, relay/park-records.ts), so a
 * record outlives neither its key nor, by more than this, its relay.
 */
export const PARK_RECORD_TTL_SECONDS = 3 * 24 * 3600;

/** One relay's claim to hold parked sockets for a cookie (generic) or a uuid (http). */
export interface ParkRecord {
  relayId: string;
  /** `host:port` of that relay's peer listener. */
  peer: string;
  count: number;
  /** For http parks: the newest TOTP step a live park there was made with. */
  step?: number;
  /** Epoch seconds: the store deletes the record then (garbage collection, not liveness). */
  expiresAt: number;
  /** The parking relay's region (multi-region; absent: the same region as every reader). */
  region?: string;
  /** Public base URL of that region's HTTP-specific port (where other regions redirect to). */
  httpUrl?: string;
  /** Display only (console): the relay's public `host:port` for this record's protocol. */
  address?: string;
  /**
   * Generic records only: `host:port` where mobile clients reach that relay's generic port
   * directly (its own public address, not the front); look-ups may name it (server/lookup.ts).
   */
  direct?: string;
  /** What the parked agent last reported about its target, since when, and its newest report (epoch ms). */
  target?: TargetState;
  targetSince?: number;
  targetAt?: number;
}

/** A park record whose relay's heartbeat is alive (`Store.liveParks`). */
export interface LiveParkRecord extends ParkRecord {
  /** The relay's newest heartbeat, epoch ms: the hidden server was parked there then. */
  relaySeenAt: number;
}

/** A uuid's last rendezvous through one protocol, as the relay holding its hidden socket saw it. */
export interface LastRendezvousRecord {
  /** End time, epoch ms. */
  at: number;
  end: string;
  /** Why an `end: revoked` rendezvous was ended (`identity rotated`, `identity disabled`, `identity deleted`). */
  reason?: string;
  bytesToHidden: number;
  bytesToMobile: number;
  durationMs: number;
  /** 0: both sides on one relay; 1: through a peer link. */
  hops: number;
  relayId: string;
  /** The writing relay's public `host:port` and region, when it knows them. */
  address?: string;
  region?: string;
  mobileRelayId?: string;
}

/** A uuid's last rendezvous through each protocol (absent: none within LAST_RENDEZVOUS_TTL_SECONDS). */
export type LastRendezvous = Partial<Record<ParkKind, LastRendezvousRecord>>;

/**
 * The LAST item lives this long after its newest write: a month of "last rendezvous" for the
 * console, while the item of a deleted identity (or one a late rendezvous end re-created) goes.
 */
export const LAST_RENDEZVOUS_TTL_SECONDS = 30 * 24 * 3600;

/** The park records of one table. */
export class Parks {
  constructor(private readonly table: Table) {}

  /** Records (or refreshes) that relay `rec.relayId` holds parked sockets for `key`. */
  async put(kind: ParkKind, key: string, rec: ParkRecord): Promise<void> {
    const { pk, prefix } = parkKeys(kind, key);
    await this.table.put({ Item: { pk, sk: `${prefix}${rec.relayId}`, ...rec } });
  }

  /** Removes a relay's park record for `key`. */
  async delete(kind: ParkKind, key: string, relayId: string): Promise<void> {
    const { pk, prefix } = parkKeys(kind, key);
    await this.table.delete({ Key: { pk, sk: `${prefix}${relayId}` } });
  }

  /** The unexpired park records for `key`, newest write first (alive or not: see `Store.liveParks`). */
  async list(kind: ParkKind, key: string, nowMs: number = Date.now()): Promise<ParkRecord[]> {
    const { pk, prefix } = parkKeys(kind, key);
    const items = await this.table.queryPage({
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
      ExpressionAttributeValues: { ':pk': pk, ':prefix': prefix },
      ConsistentRead: true,
      Limit: 50,
    });
    return items
      .map((r) => withoutKeys<ParkRecord>(r))
      .filter((r) => isLive(r.expiresAt, nowMs))
      .sort((a, b) => b.expiresAt - a.expiresAt);
  }
}

/** The last-rendezvous records of one table. */
export class LastRendezvousRecords {
  constructor(private readonly table: Table) {}

  /**
   * Records a uuid's last rendezvous for the given protocols in one write (the others stay), and
   * pushes the item's expiry LAST_RENDEZVOUS_TTL_SECONDS ahead.
   */
  async put(uuid: string, last: LastRendezvous, nowMs: number = Date.now()): Promise<void> {
    const kinds = (Object.keys(last) as ParkKind[]).filter((k) => last[k]);
    if (!kinds.length) return;
    await this.table.update({
      Key: lastRendezvousKey(uuid),
      UpdateExpression: `SET expiresAt = :exp, ${kinds.map((k) => `#${k} = :${k}`).join(', ')}`,
      ExpressionAttributeNames: Object.fromEntries(kinds.map((k) => [`#${k}`, k])),
      ExpressionAttributeValues: {
        ':exp': Math.floor(nowMs / 1000) + LAST_RENDEZVOUS_TTL_SECONDS,
        ...Object.fromEntries(kinds.map((k) => [`:${k}`, last[k]])),
      },
    });
  }

  /** A uuid's last rendezvous per protocol (empty when none is recorded or it expired). */
  async get(uuid: string, nowMs: number = Date.now()): Promise<LastRendezvous> {
    const { pk, sk } = lastRendezvousKey(uuid);
    const item = await this.table.get<LastRendezvous & { expiresAt: number }>(pk, sk);
    if (!item || !isLive(item.expiresAt, nowMs)) return {};
    return { generic: item.generic, http: item.http };
  }

  /** Deletes a uuid's record (its identity is being deleted). */
  async delete(uuid: string): Promise<void> {
    await this.table.delete({ Key: lastRendezvousKey(uuid) });
  }
}
