/**
 * Links between relays. A relay holding a parked socket serves other relays' requests for it on
 * its peer port (`startPeerListener`); a relay whose mobile client's hidden server is parked
 * elsewhere asks there (`dialPeer`). Exactly one hop: the peer listener only hands out sockets
 * parked locally, never forwards and never waits.
 */

import type { AddressInfo } from 'node:net';
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { isRendezvousError, RendezvousError } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { ParkKind } from '../core/protocol.js';
import { LineDecoder, OK_LINE } from '../core/relay-line.js';
import { connectTcp, expectOk } from '../core/socket-reader.js';
import { SPLICE_CAP_MESSAGE, type SplicesPerUuid } from './limits.js';
import { hiddenStream } from './pairing.js';
import type { ParkingLot } from './parking.js';
import {
  encodePeerLine,
  isPeerHello,
  MAX_PEER_LINE,
  PeerNonces,
  type PeerRequestTag,
  verifyPeerHello,
  verifyPeerLine,
} from './peer-line.js';
import type { PeerPool } from './peer-pool.js';
import { refuse } from './refuse.js';
import { newRid, type RelayTelemetry, type RendezvousStart } from './telemetry.js';

/** Deadline for a peer's request line, and for a peer's answer. */
export const PEER_TIMEOUT_MS = 3_000;
/** How long a pooled link (one that said a valid hello) may wait for its request. */
export const PEER_LINK_IDLE_MS = 30_000;

/** Starts the peer listener; resolves once it listens. */
export async function startPeerListener(opts: {
  port: number;
  host: string;
  secret: string;
  lot: ParkingLot;
  log: Log;
  perUuid: SplicesPerUuid;
  spliceHidden: (hidden: Duplex, link: Duplex, rendezvous: RendezvousStart) => void;
  telemetry: RelayTelemetry;
  /** This relay's id: the hidden side of the rendezvous it serves. */
  relayId: string;
  onError: (err: NodeJS.ErrnoException) => void;
}): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const nonces = new PeerNonces();
  const server = createServer({ allowHalfOpen: true }, (link) => {
    sockets.add(link);
    link.once('close', () => sockets.delete(link));
    link.setNoDelay(true);
    link.on('error', () => link.destroy());
    let decoder = new LineDecoder(MAX_PEER_LINE);
    let deadline = setTimeout(() => {
      opts.telemetry.refused('handshake_timeout', { protocol: 'peer', source: link.remoteAddress });
      refuse(link, 'handshake timeout');
    }, PEER_TIMEOUT_MS);
    // A peer that cannot authenticate is logged (rate-limited) with its address; the cause stays in words.
    const refusePeer = (err: unknown) => {
      opts.telemetry.refused('peer_refused', {
        protocol: 'peer',
        source: link.remoteAddress,
        detail: (err as Error).message,
      });
      refuse(link, (err as Error).message);
    };
    const onData = (chunk: Buffer) => {
      let got: ReturnType<LineDecoder['push']>;
      try {
        got = decoder.push(chunk);
      } catch (err) {
        clearTimeout(deadline);
        refusePeer(err);
        return;
      }
      if (!got) return;
      clearTimeout(deadline);
      if (isPeerHello(got.line)) {
        // A pooled link: authenticated now, it may wait idle for its request (the asking relay
        // gives idle links up before this runs out, so this only ends links it forgot).
        try {
          verifyPeerHello(opts.secret, got.line, Date.now(), nonces);
        } catch (err) {
          link.off('data', onData);
          refusePeer(err);
          return;
        }
        decoder = new LineDecoder(MAX_PEER_LINE);
        deadline = setTimeout(() => link.end(), PEER_LINK_IDLE_MS);
        if (got.rest.length > 0) onData(got.rest);
        return;
      }
      link.off('data', onData);
      link.pause();
      let req: PeerRequest;
      try {
        req = verifyPeerLine(opts.secret, got.line, Date.now(), nonces);
      } catch (err) {
        refusePeer(err);
        return;
      }
      void serve(link, req, got.rest);
    };
    link.on('data', onData);
  });

  /** Hands a socket parked here (waiting up to the asked time, in line with local mobiles) to the link. */
  const serve = async (link: Socket, req: PeerRequest, rest: Buffer) => {
    let parked = opts.lot.take(req.kind, req.key);
    if (!parked && req.waitMs > 0) {
      const wait = opts.lot.waitFor(req.kind, req.key, req.waitMs);
      link.once('close', wait.cancel);
      parked = await wait.promise;
      link.off('close', wait.cancel);
    }
    if (!parked) {
      refuse(link, 'no hidden server parked here');
      return;
    }
    let capped = false;
    try {
      opts.perUuid.check(parked.uuid);
    } catch {
      capped = true;
    }
    if (link.destroyed || capped) {
      // The asking relay gave up meanwhile, or the hidden server is at its cap: put the socket
      // back rather than lose it.
      if (!opts.lot.park(parked, (p) => p.socket.destroy())) parked.socket.destroy();
      if (capped) refuse(link, SPLICE_CAP_MESSAGE);
      return;
    }
    // An older relay sends no rid: this relay makes one, so its own record still has one.
    const rid = req.tag?.rid ?? newRid();
    hiddenStream(req.kind, parked, rid);
    if (rest.length > 0) parked.socket.write(rest);
    link.write(OK_LINE);
    opts.spliceHidden(parked.socket, link, {
      rid,
      protocol: req.kind,
      uuid: parked.uuid,
      hops: 1,
      hiddenRelayId: opts.relayId,
      mobileRelayId: req.tag?.from ?? 'unknown',
      toHiddenBefore: rest.length,
      startedAt: Date.now(),
    });
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', opts.onError);
  return { server, port: (server.address() as AddressInfo).port, sockets };
}

/** A verified peer request. */
type PeerRequest = { kind: ParkKind; key: string; waitMs: number; tag?: PeerRequestTag };

/** `host:port` → [host, port]. */
export function splitPeer(peer: string): [string, number] {
  const i = peer.lastIndexOf(':');
  return [peer.slice(0, i), Number(peer.slice(i + 1))];
}

/** Sends a signed request on `link` and reads the answer; resolves to the link past its `+OK`. */
async function ask(
  link: Socket,
  secret: string,
  kind: ParkKind,
  key: string,
  waitMs: number,
  tag: PeerRequestTag | undefined,
  onAnswer: ((ms: number) => void) | undefined,
): Promise<Socket> {
  const asked = Date.now();
  link.write(encodePeerLine(secret, kind, key, waitMs, asked, tag));
  try {
    await expectOk(link, { timeoutMs: PEER_TIMEOUT_MS + waitMs, what: 'answer from peer' });
  } catch (err) {
    // A refusal is an answer too; a link that broke or timed out is not.
    if (isRendezvousError(err, 'RELAY_REFUSED')) onAnswer?.(Date.now() - asked);
    throw err;
  }
  onAnswer?.(Date.now() - asked);
  return link;
}

const busyFrom = (err: unknown) =>
  isRendezvousError(err, 'RELAY_REFUSED') && err.message === SPLICE_CAP_MESSAGE
    ? new RendezvousError('BUSY', SPLICE_CAP_MESSAGE, { permanent: false, retryAfter: 5 })
    : undefined;

/**
 * Asks the relay at `peer` (`host:port`) for a socket parked under (kind, key), on an idle link
 * from `pool` when there is one, else on a new connection. Resolves to the link, past its `+OK`,
 * or undefined when that relay has none or cannot be reached (a stale record). Throws only BUSY,
 * when that relay says the hidden server is at its cap of live splices.
 */
export async function dialPeer(
  peer: string,
  secret: string,
  kind: ParkKind,
  key: string,
  waitMs = 0,
  pool?: PeerPool,
  tag?: PeerRequestTag,
  onAnswer?: (ms: number) => void,
): Promise<Socket | undefined> {
  let sendTag = tag;
  const pooled = pool?.take(peer);
  if (pooled) {
    try {
      return await ask(pooled, secret, kind, key, waitMs, sendTag, onAnswer);
    } catch (err) {
      pooled.destroy();
      const busy = busyFrom(err);
      if (busy) throw busy;
      // A relay of the previous release (a rolling deploy) does not know the tag: ask it again
      // without one, so a rendezvous across versions still pairs (the holder then makes its own rid).
      if (sendTag && untagged(err)) sendTag = undefined;
      // A refusal is that relay's answer. A link that ended without one had gone stale in the
      // pool (that relay restarted, or gave the link up): ask again on a new connection.
      else if (isRendezvousError(err, 'RELAY_REFUSED')) return undefined;
    }
  }
  const [host, port] = splitPeer(peer);
  for (;;) {
    let link: Socket | undefined;
    try {
      link = await connectTcp(host, port, { timeoutMs: PEER_TIMEOUT_MS });
      return await ask(link, secret, kind, key, waitMs, sendTag, onAnswer);
    } catch (err) {
      link?.destroy();
      const busy = busyFrom(err);
      if (busy) throw busy;
      if (sendTag && untagged(err)) {
        sendTag = undefined;
        continue;
      }
      return undefined;
    }
  }
}

/** The holder refused the request's shape: a relay that predates the rid tag. */
const untagged = (err: unknown) =>
  isRendezvousError(err, 'RELAY_REFUSED') && err.message === 'malformed peer line';
