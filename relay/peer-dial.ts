/**
 * The asking side of a peer link: a relay whose mobile client's hidden server is parked on
 * another relay asks that relay for it (the holder answers on its peer port, relay/peer-listener.ts).
 */
import type { Socket } from 'node:net';
import { isRendezvousError, RendezvousError } from '../core/errors.js';
import type { ParkKind } from '../core/protocol.js';
import { connectTcp, expectOk } from '../core/socket-reader.js';
import { SPLICE_CAP_MESSAGE } from './limits.js';
import { encodePeerLine, PEER_TIMEOUT_MS, type PeerRequestTag, splitPeer } from './peer-line.js';
import type { PeerPool } from './peer-pool.js';

/** One request to another relay for a socket parked there. */
export interface PeerAsk {
  /** The holder's `host:port` (its park record's `peer`). */
  peer: string;
  /** The cluster secret the request is signed with. */
  secret: string;
  kind: ParkKind;
  key: string;
  /** How long the holder may wait for a socket to be parked there (default 0). */
  waitMs?: number;
  /** Idle links to other relays, taken instead of connecting. */
  pool?: PeerPool;
  /** The rendezvous's rid and this relay's id, signed into the request. */
  tag?: PeerRequestTag;
  /**
   * The holder's relay id (its park record's `relayId`), signed into the request so it is good at
   * that relay only.
   */
  to?: string;
  /** The holder answered after `ms` (`+OK` or `-ERR`; the PeerLinkLatency metric). */
  onAnswer?: (ms: number) => void;
}

/** What a request carries beyond its key: less of it for a holder of an older release. */
interface Variant {
  tag?: PeerRequestTag;
  to?: string;
}

/**
 * The request's forms, newest first: bound and tagged; then as the previous release sends it
 * (tagged, bound to no relay); then as the one before (neither). A holder that does not know a
 * form refuses its shape (see `olderForm`), and the next form is tried.
 */
function variants(req: PeerAsk): Variant[] {
  const all: Variant[] = [{ tag: req.tag, to: req.to }];
  if (req.to !== undefined) all.push({ tag: req.tag });
  if (req.tag !== undefined) all.push({});
  return all;
}

/**
 * Sends a signed request on `link` and reads the answer; resolves to the link past its `+OK`.
 * `v` is the form sent this time.
 */
async function ask(link: Socket, req: PeerAsk, v: Variant): Promise<Socket> {
  const waitMs = req.waitMs ?? 0;
  const asked = Date.now();
  link.write(
    encodePeerLine(req.secret, { kind: req.kind, key: req.key, waitMs, tag: v.tag, to: v.to }, asked),
  );
  try {
    await expectOk(link, { timeoutMs: PEER_TIMEOUT_MS + waitMs, what: 'answer from peer' });
  } catch (err) {
    // A refusal is an answer too; a link that broke or timed out is not.
    if (isRendezvousError(err, 'RELAY_REFUSED')) req.onAnswer?.(Date.now() - asked);
    throw err;
  }
  req.onAnswer?.(Date.now() - asked);
  return link;
}

const busyFrom = (err: unknown) =>
  isRendezvousError(err, 'RELAY_REFUSED') && err.message === SPLICE_CAP_MESSAGE
    ? new RendezvousError('BUSY', SPLICE_CAP_MESSAGE, { permanent: false, retryAfter: 5 })
    : undefined;

/**
 * Asks the relay at `req.peer` (`host:port`) for a socket parked under (kind, key), on an idle
 * link from `req.pool` when there is one, else on a new connection. Resolves to the link, past
 * its `+OK`, or undefined when that relay has none or cannot be reached (a stale record). Throws
 * only BUSY, when that relay says the hidden server is at its cap of live splices.
 */
export async function dialPeer(req: PeerAsk): Promise<Socket | undefined> {
  const peer = req.peer;
  const forms = variants(req);
  let form = 0;
  const pooled = req.pool?.take(peer, req.to);
  if (pooled) {
    try {
      return await ask(pooled, req, forms[form] as Variant);
    } catch (err) {
      pooled.destroy();
      const busy = busyFrom(err);
      if (busy) throw busy;
      // A relay of an older release (a rolling deploy) does not know this form: ask it again in
      // the previous one, so a rendezvous across versions still pairs (without a tag the holder
      // makes its own rid).
      if (form + 1 < forms.length && olderForm(err)) form++;
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
      return await ask(link, req, forms[form] as Variant);
    } catch (err) {
      link?.destroy();
      const busy = busyFrom(err);
      if (busy) throw busy;
      if (form + 1 < forms.length && olderForm(err)) {
        form++;
        continue;
      }
      return undefined;
    }
  }
}

/**
 * The holder refused the request's shape or length: a relay that predates one of its fields (the
 * destination, or the rid tag). Only an older release says this to a line this release signed.
 */
const olderForm = (err: unknown) =>
  isRendezvousError(err, 'RELAY_REFUSED') &&
  (err.message === 'malformed peer line' || err.message === 'line too long');
