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
import { encodePeerLine, MAX_PEER_LINE, PeerNonces, verifyPeerLine } from '../core/peer-line.js';
import { LineDecoder, OK_LINE } from '../core/relay-line.js';
import { connectTcp, expectOk } from '../core/socket-reader.js';
import type { ParkKind } from '../core/store.js';
import { SPLICE_CAP_MESSAGE, type SplicesPerUuid } from './limits.js';
import type { ParkingLot } from './parking.js';
import { refuse } from './refuse.js';

/** Deadline for a peer's request line, and for a peer's answer. */
export const PEER_TIMEOUT_MS = 3_000;

/** Starts the peer listener; resolves once it listens. */
export async function startPeerListener(opts: {
  port: number;
  host: string;
  secret: string;
  lot: ParkingLot;
  log: Log;
  perUuid: SplicesPerUuid;
  spliceHidden: (hidden: Duplex, link: Duplex, uuid: string) => void;
  onError: (err: NodeJS.ErrnoException) => void;
}): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const nonces = new PeerNonces();
  const server = createServer({ allowHalfOpen: true }, (link) => {
    sockets.add(link);
    link.once('close', () => sockets.delete(link));
    link.setNoDelay(true);
    link.on('error', () => link.destroy());
    const decoder = new LineDecoder(MAX_PEER_LINE);
    const deadline = setTimeout(() => refuse(link, 'handshake timeout'), PEER_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      let got: ReturnType<LineDecoder['push']>;
      try {
        got = decoder.push(chunk);
      } catch (err) {
        clearTimeout(deadline);
        refuse(link, (err as Error).message);
        return;
      }
      if (!got) return;
      clearTimeout(deadline);
      link.off('data', onData);
      link.pause();
      let req: { kind: ParkKind; key: string; waitMs: number };
      try {
        req = verifyPeerLine(opts.secret, got.line, Date.now(), nonces);
      } catch (err) {
        opts.log.warn('peer link refused', { remote: link.remoteAddress, reason: (err as Error).message });
        refuse(link, (err as Error).message);
        return;
      }
      void serve(link, req, got.rest);
    };
    link.on('data', onData);
  });

  /** Hands a socket parked here (waiting up to the asked time, in line with local mobiles) to the link. */
  const serve = async (link: Socket, req: { kind: ParkKind; key: string; waitMs: number }, rest: Buffer) => {
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
    if (req.kind === 'generic') parked.socket.write(OK_LINE);
    if (rest.length > 0) parked.socket.write(rest);
    link.write(OK_LINE);
    opts.spliceHidden(parked.socket, link, parked.uuid);
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

/**
 * Asks the relay at `peer` (`host:port`) for a socket parked under (kind, key). Resolves to the
 * link, past its `+OK`, or undefined when that relay has none or cannot be reached (a stale
 * record). Throws only BUSY, when that relay says the hidden server is at its cap of live splices.
 */
export async function dialPeer(
  peer: string,
  secret: string,
  kind: ParkKind,
  key: string,
  waitMs = 0,
): Promise<Socket | undefined> {
  const i = peer.lastIndexOf(':');
  const host = peer.slice(0, i);
  const port = Number(peer.slice(i + 1));
  let link: Socket | undefined;
  try {
    link = await connectTcp(host, port, { timeoutMs: PEER_TIMEOUT_MS });
    link.write(encodePeerLine(secret, kind, key, waitMs));
    await expectOk(link, { timeoutMs: PEER_TIMEOUT_MS + waitMs, what: 'answer from peer' });
    return link;
  } catch (err) {
    link?.destroy();
    if (isRendezvousError(err, 'RELAY_REFUSED') && err.message === SPLICE_CAP_MESSAGE) {
      throw new RendezvousError('BUSY', SPLICE_CAP_MESSAGE, { permanent: false, retryAfter: 5 });
    }
    return undefined;
  }
}
