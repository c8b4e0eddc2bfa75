/**
 * Finding the hidden server for a mobile client: a socket parked on this relay first, then one
 * parked on another relay (through a peer link, read from the park records), then waiting
 * briefly for one to be parked anywhere. Two relays racing for one parked socket: the holder
 * hands it to the first peer request; the loser's request gets `-ERR` and tries the next record.
 */
import type { Duplex } from 'node:stream';
import { OK_LINE } from '../core/relay-line.js';
import type { ParkKind } from '../core/store.js';
import type { ParkRecords } from './park-records.js';
import type { ParkingLot } from './parking.js';
import { dialPeer } from './peer.js';
import type { PeerPool } from './peer-pool.js';

/** How often a waiting mobile client re-reads the park records. */
export const REMOTE_POLL_MS = 250;
/** How long one peer request may wait at the holder, in line with the holder's own mobiles. */
export const PEER_WAIT_SLICE_MS = 1_000;

/** The cluster side of pairing; absent when the relay runs alone. */
export interface ClusterLink {
  records: ParkRecords;
  secret: string;
  /** Idle links to other relays, taken instead of connecting on a pairing's critical path. */
  pool?: PeerPool;
}

/**
 * Resolves to a stream that reaches the hidden server — ready for the mobile client's bytes
 * (a generic-protocol hidden server has had its `+OK`) — or undefined after `waitMs`.
 * `gone()` lets a departed mobile client stop the search early. `beforeWait` runs once, when
 * nothing is parked here and the client must wait: it may refuse (throw) and returns what ends
 * the wait's accounting. Throws BUSY when the only relay holding one says the cap is reached.
 */
export async function claimHiddenServer(
  lot: ParkingLot,
  cluster: ClusterLink | undefined,
  kind: ParkKind,
  key: string,
  waitMs: number,
  gone: () => boolean,
  beforeWait: () => () => void = () => () => {},
): Promise<Duplex | undefined> {
  const here = lot.take(kind, key);
  if (here) return hiddenStream(kind, here);
  const release = beforeWait();
  try {
    return await search(lot, cluster, kind, key, waitMs, gone);
  } finally {
    release();
  }
}

function hiddenStream(kind: ParkKind, p: { socket: Duplex }): Duplex {
  if (kind === 'generic') p.socket.write(OK_LINE);
  return p.socket;
}

async function search(
  lot: ParkingLot,
  cluster: ClusterLink | undefined,
  kind: ParkKind,
  key: string,
  waitMs: number,
  gone: () => boolean,
): Promise<Duplex | undefined> {
  const deadline = Date.now() + waitMs;
  const local = (p: { socket: Duplex }) => hiddenStream(kind, p);
  let busy: unknown;
  for (;;) {
    const here = lot.take(kind, key);
    if (here) return local(here);
    if (cluster) {
      const records = await cluster.records.others(kind, key).catch(() => []);
      for (const rec of records) {
        if (gone()) return undefined;
        const left = deadline - Date.now();
        try {
          const link = await dialPeer(
            rec.peer,
            cluster.secret,
            kind,
            key,
            Math.max(0, Math.min(left, PEER_WAIT_SLICE_MS)),
            cluster.pool,
          );
          if (link) return link;
        } catch (err) {
          // That relay's hidden server is at its cap; another relay may still have room.
          busy = err;
        }
      }
    }
    const left = deadline - Date.now();
    if (busy) throw busy;
    if (left <= 0 || gone()) return undefined;
    // Wait here for a local park; with a cluster, look at the records again every REMOTE_POLL_MS.
    const wait = lot.waitFor(kind, key, cluster ? Math.min(left, REMOTE_POLL_MS) : left);
    const handed = await wait.promise;
    if (handed) return local(handed);
  }
}
