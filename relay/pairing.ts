/**
 * Finding the hidden server for a mobile client: a socket parked on this relay first, then one
 * parked on another relay (through a peer link, read from the park records), then waiting
 * briefly for one to be parked anywhere. Two relays racing for one parked socket: the holder
 * hands it to the first peer request; the loser's request gets `-ERR` and tries the next record.
 */
import type { Duplex } from 'node:stream';
import type { ParkKind } from '../core/protocol.js';
import type { ParkRecords } from './park-records.js';
import { hiddenStream, type Parked, type ParkingLot } from './parking.js';
import { dialPeer } from './peer-dial.js';
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

/** The rendezvous being paired: its correlation id, and who asks (for the peer request). */
export interface ClaimRequest {
  rid: string;
  /** This relay's id, sent to the holder with the rid. */
  relayId: string;
  /** A peer request was answered after `ms` (the PeerLinkLatency metric). */
  onPeerAnswer?: (ms: number) => void;
}

/** What a mobile client asks for, and how long and on what terms it waits. */
export interface Claim {
  kind: ParkKind;
  /** The cookie (generic protocol) or the uuid (HTTP-specific). */
  key: string;
  /** How long to wait for a hidden server to be parked anywhere. */
  waitMs: number;
  /** True once the mobile client has left: the search stops early. */
  gone: () => boolean;
  /**
   * Runs once, when nothing is parked here and the client must wait: it may refuse (throw) and
   * returns what ends the wait's accounting.
   */
  beforeWait: () => () => void;
  /** The rendezvous, for the peer request. */
  request: ClaimRequest;
}

/** A hidden server found: the stream reaching it, and the relay holding it when that is another one. */
export interface Claimed {
  stream: Duplex;
  /** The holder's relay id when the stream is a peer link; absent for a socket parked here. */
  peerRelayId?: string;
}

/**
 * Resolves to a stream that reaches the hidden server — ready for the mobile client's bytes
 * (a generic-protocol hidden server has had its `+OK`) — or undefined after `claim.waitMs`.
 * Throws BUSY when the only relay holding one says the cap is reached.
 */
export async function claimHiddenServer(
  lot: ParkingLot,
  cluster: ClusterLink | undefined,
  claim: Claim,
): Promise<Claimed | undefined> {
  const here = lot.take(claim.kind, claim.key);
  if (here) return { stream: hiddenStream(claim.kind, here, claim.request.rid) };
  const release = claim.beforeWait();
  try {
    return await search(lot, cluster, claim);
  } finally {
    release();
  }
}

async function search(
  lot: ParkingLot,
  cluster: ClusterLink | undefined,
  claim: Claim,
): Promise<Claimed | undefined> {
  const { kind, key, gone, request: req } = claim;
  const deadline = Date.now() + claim.waitMs;
  const local = (p: Parked): Claimed => ({ stream: hiddenStream(kind, p, req.rid) });
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
          const link = await dialPeer({
            peer: rec.peer,
            secret: cluster.secret,
            kind,
            key,
            waitMs: Math.max(0, Math.min(left, PEER_WAIT_SLICE_MS)),
            pool: cluster.pool,
            tag: { rid: req.rid, from: req.relayId },
            // Bound to the holder: a captured line is no good at any other relay.
            to: rec.relayId,
            onAnswer: req.onPeerAnswer,
          });
          if (link) return { stream: link, peerRelayId: rec.relayId };
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
