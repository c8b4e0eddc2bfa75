/**
 * The holder's side of the links between relays. A relay holding a parked socket serves other
 * relays' requests for it on its peer port (`startPeerListener`); a relay whose mobile client's
 * hidden server is parked elsewhere asks there (`dialPeer`, relay/peer-dial.ts). Exactly one hop:
 * the peer listener only hands out sockets parked locally, never forwards and never waits.
 */

import { createServer, isIP, type Server, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { Duplex } from 'node:stream';
import type { Log } from '../core/log.js';
import { encodeErrorLine, LineDecoder, OK_LINE } from '../core/relay-line.js';
import { HandshakeAdmission } from './admission.js';
import { shed } from './capacity.js';
import { SPLICE_CAP_MESSAGE, type SplicesPerUuid } from './limits.js';
import { listen } from './listen.js';
import { hiddenStream, type ParkingLot } from './parking.js';
import {
  isPeerHello,
  MAX_PEER_LINE,
  PEER_LINK_IDLE_MS,
  PEER_TIMEOUT_MS,
  PeerNonces,
  type PeerRequest,
  type PeerSelf,
  verifyPeerHello,
  verifyPeerLine,
} from './peer-line.js';
import { refuse } from './refuse.js';
import { newRid, type RelayTelemetry, type RendezvousStart } from './telemetry.js';

/** Peer connections in their handshake (no valid hello or request yet) at once, by default. */
export const MAX_PEER_HANDSHAKES = 256;

/**
 * Where the peer port listens by default: the address other relays dial when it is one of this
 * machine's (a loopback address, or one on an interface, such as an ECS task's private IP), so the
 * port is not open on every address the public ports are; else `bind` (the public listen address).
 */
export function defaultPeerBind(peerHost: string, bind: string): string {
  if (!isIP(peerHost)) return bind;
  if (peerHost === '::1' || peerHost.startsWith('127.')) return peerHost;
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.address === peerHost) return peerHost;
  return bind;
}

/** Starts the peer listener; resolves once it listens. */
export async function startPeerListener(opts: {
  port: number;
  host: string;
  /** Counts an accepted connection against the descriptor ceiling; false: refused (answered) already. */
  accept: (link: Socket) => boolean;
  /** Connections in their handshake at once (past it: refused at once, and logged). */
  maxHandshakes: number;
  secret: string;
  lot: ParkingLot;
  log: Log;
  perUuid: SplicesPerUuid;
  spliceHidden: (hidden: Duplex, link: Duplex, rendezvous: RendezvousStart) => void;
  telemetry: RelayTelemetry;
  /** This relay's id: the hidden side of the rendezvous it serves, and what peer lines must name. */
  relayId: string;
  /** For this long after the start, lines naming no relay (the previous release's) are accepted. */
  unboundGraceMs: number;
  onError: (err: NodeJS.ErrnoException) => void;
}): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const nonces = new PeerNonces();
  const admission = new HandshakeAdmission(opts.maxHandshakes, opts.maxHandshakes);
  const graceEnds = Date.now() + opts.unboundGraceMs;
  const self = (): PeerSelf => ({ relayId: opts.relayId, acceptUnbound: Date.now() < graceEnds });
  const server = createServer({ allowHalfOpen: true }, (link) => {
    if (!opts.accept(link)) return;
    // Strangers' connections that say nothing hold a descriptor each until the deadline below:
    // only so many at once, the rest refused at once (and the descriptor freed without linger).
    const admitted = admission.admit(link);
    if (!admitted.ok) {
      opts.telemetry.refused('too_many_handshakes', { protocol: 'peer', source: link.remoteAddress });
      shed(link, encodeErrorLine(admitted.reason));
      return;
    }
    sockets.add(link);
    link.once('close', () => sockets.delete(link));
    let decoder = new LineDecoder(MAX_PEER_LINE);
    let deadline = setTimeout(() => {
      admitted.release();
      opts.telemetry.refused('handshake_timeout', { protocol: 'peer', source: link.remoteAddress });
      refuse(link, 'handshake timeout');
    }, PEER_TIMEOUT_MS);
    // A peer that cannot authenticate is logged (rate-limited) with its address; the cause stays in words.
    const refusePeer = (err: unknown) => {
      admitted.release();
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
          verifyPeerHello(opts.secret, got.line, Date.now(), nonces, self());
        } catch (err) {
          link.off('data', onData);
          refusePeer(err);
          return;
        }
        admitted.release();
        decoder = new LineDecoder(MAX_PEER_LINE);
        deadline = setTimeout(() => link.end(), PEER_LINK_IDLE_MS);
        if (got.rest.length > 0) onData(got.rest);
        return;
      }
      link.off('data', onData);
      link.pause();
      let req: PeerRequest;
      try {
        req = verifyPeerLine(opts.secret, got.line, Date.now(), nonces, self());
      } catch (err) {
        refusePeer(err);
        return;
      }
      admitted.release();
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
  const { port } = await listen(server, opts.port, opts.host);
  server.on('error', opts.onError);
  return { server, port, sockets };
}
