/**
 * The relay-to-relay peer link request, one line, signed with the cluster secret so the secret
 * itself never crosses the wire:
 *
 *   "PEER" SP kind SP key SP wait-ms SP unix-seconds SP nonce SP mac [SP "rid=" rid SP "from=" relay-id] [SP "to=" relay-id] "\n"
 *   nonce = base64url(16 random bytes)          (22 characters)
 *   mac = base64url(HMAC-SHA256(secret, kind SP key SP wait-ms SP unix-seconds SP nonce [SP rid SP relay-id] [SP "to=" relay-id]))
 *   rid = the rendezvous's correlation id (16 base64url characters), from = the asking relay's id,
 *   to = the id of the relay the line is for (the holder's `relayId` in its park record)
 *
 * The rendezvous's correlation id and the asking relay travel signed with the request, so the holder
 * logs the rendezvous under the same rid and names the relay its mobile client reached. A line
 * without them (an older relay) is still accepted.
 *
 * `to` binds the line to one relay: the holder refuses a line for another relay ("peer line for
 * another relay"), so a line captured on its way to one relay cannot be replayed at another, whose
 * nonce memory is its own. A line without `to` (the previous release) is accepted only during a
 * grace after the holder starts (RELAY_PEER_UNBOUND_GRACE_MS, a rolling deploy's overlap), then
 * refused ("peer line names no relay"). The literal "to=" in the signed text keeps a bound line's
 * signature from ever matching an unbound line's.
 *
 * kind is "R" (generic protocol, key = cookie) or "H" (HTTP-specific, key = uuid); wait-ms is how
 * long the holder may wait for a socket to be parked there (queued fairly with its own mobile
 * clients). The answer is a relay status line: "+OK\n" then the parked socket's bytes, or "-ERR …\n".
 * The holder remembers each nonce for the line's validity window (`PeerNonces`) and refuses a
 * line it has seen: a captured line cannot be replayed.
 *
 * A pooled link (opened ahead of need, see relay/peer-pool.ts) starts with a hello, signed the
 * same way and bound the same way, that lets it wait idle for its request longer than an
 * unauthenticated connection may:
 *
 *   "PEER-LINK" SP unix-seconds SP nonce SP mac [SP "to=" relay-id] "\n"
 *   mac = base64url(HMAC-SHA256(secret, "LINK" SP unix-seconds SP nonce [SP "to=" relay-id]))
 *
 * No answer; the request line (with its own nonce) follows when the link is used.
 *
 * The deadlines both ends keep (PEER_TIMEOUT_MS, PEER_LINK_IDLE_MS) live here with the lines, so
 * the holder (relay/peer-listener.ts), the asker (relay/peer-dial.ts) and the pool read one value.
 */
import { createHmac } from 'node:crypto';
import { RendezvousError } from '../core/errors.js';
import type { ParkKind } from '../core/protocol.js';
import { pooledTokens, secretsEqual } from '../server/cookies.js';

/** Longest peer line, newline included (a bound, tagged line with the longest key is about 310). */
export const MAX_PEER_LINE = 400;
/** How far a peer line's timestamp may be from now. */
export const PEER_CLOCK_SKEW_SECONDS = 60;
/** Longest wait a peer may ask for. */
export const MAX_PEER_WAIT_MS = 10_000;
/** Deadline for a peer's request line, and for a peer's answer. */
export const PEER_TIMEOUT_MS = 3_000;
/** How long a pooled link (one that said a valid hello) may wait for its request. */
export const PEER_LINK_IDLE_MS = 30_000;

/** A fresh nonce: base64url of 16 CSPRNG bytes, drawn from a 4 KiB block (see pooledTokens). */
const newNonce = pooledTokens(16, 256);

/** Who asks, for which rendezvous: carried (signed) by a peer request. */
export interface PeerRequestTag {
  /** The rendezvous's correlation id (16 base64url characters). */
  rid: string;
  /** The asking relay's id (where the mobile client arrived). */
  from: string;
}

/** A peer request: which parked socket, how long the holder may wait for one, and who asks. */
export interface PeerRequest {
  kind: ParkKind;
  key: string;
  waitMs: number;
  tag?: PeerRequestTag;
}

/** What a holder checks a line's destination against. */
export interface PeerSelf {
  /** This relay's id: a line naming another relay is refused. */
  relayId: string;
  /** Whether a line naming no relay (the previous release's) is accepted now (the start-up grace). */
  acceptUnbound: boolean;
}

/** `host:port` (a park record's `peer`) → [host, port]. */
export function splitPeer(peer: string): [string, number] {
  const i = peer.lastIndexOf(':');
  return [peer.slice(0, i), Number(peer.slice(i + 1))];
}

const RID_SHAPE = /^[A-Za-z0-9_-]{16}$/;
const RELAY_ID_SHAPE = /^[A-Za-z0-9-]{1,64}$/;

/** True when `id` has the shape of a relay id a peer line can carry (`from=`, `to=`). */
export function isRelayId(id: string): boolean {
  return RELAY_ID_SHAPE.test(id);
}

/** The signed fields of a request line, as on the wire (`k` is "R" or "H"). */
interface SignedFields {
  k: string;
  key: string;
  waitMs: number;
  ts: number;
  nonce: string;
  tag?: PeerRequestTag;
  to?: string;
}

const bound = (to: string | undefined) => (to === undefined ? '' : ` to=${to}`);

const sign = (secret: string, { k, key, waitMs, ts, nonce, tag, to }: SignedFields) =>
  createHmac('sha256', secret)
    .update(`${k} ${key} ${waitMs} ${ts} ${nonce}${tag ? ` ${tag.rid} ${tag.from}` : ''}${bound(to)}`)
    .digest('base64url');

const signHello = (secret: string, ts: number, nonce: string, to: string | undefined) =>
  createHmac('sha256', secret)
    .update(`LINK ${ts} ${nonce}${bound(to)}`)
    .digest('base64url');

/**
 * A verified line's destination against this relay (after its signature: only an authenticated
 * line learns why it was refused).
 */
function checkDestination(to: string | undefined, self: PeerSelf | undefined): void {
  if (!self) return;
  if (to === undefined) {
    if (!self.acceptUnbound) throw new RendezvousError('AUTH_FAILED', 'peer line names no relay');
  } else if (to !== self.relayId) throw new RendezvousError('AUTH_FAILED', 'peer line for another relay');
}

/**
 * Encodes a peer request for `req.key` (`waitMs` default 0), tagged with the rendezvous's rid
 * and the asking relay when `req.tag` is given, and bound to relay `req.to` when given (always,
 * but for a holder of the previous release).
 */
export function encodePeerLine(
  secret: string,
  req: Omit<PeerRequest, 'waitMs'> & { waitMs?: number; to?: string },
  nowMs = Date.now(),
): Buffer {
  const { kind, key, tag, to } = req;
  const k = kind === 'generic' ? 'R' : 'H';
  const ts = Math.floor(nowMs / 1000);
  const w = Math.max(0, Math.min(MAX_PEER_WAIT_MS, Math.round(req.waitMs ?? 0)));
  const nonce = newNonce();
  if (tag && !(RID_SHAPE.test(tag.rid) && RELAY_ID_SHAPE.test(tag.from)))
    throw new RendezvousError('INVALID_OPTION', 'malformed peer request tag');
  if (to !== undefined && !RELAY_ID_SHAPE.test(to))
    throw new RendezvousError('INVALID_OPTION', 'malformed peer destination');
  const extra = `${tag ? ` rid=${tag.rid} from=${tag.from}` : ''}${bound(to)}`;
  return Buffer.from(
    `PEER ${k} ${key} ${w} ${ts} ${nonce} ${sign(secret, { k, key, waitMs: w, ts, nonce, tag, to })}${extra}\n`,
    'latin1',
  );
}

/** The hello of a pooled peer link, bound to relay `to` when given. */
export function encodePeerHello(secret: string, nowMs = Date.now(), to?: string): Buffer {
  if (to !== undefined && !RELAY_ID_SHAPE.test(to))
    throw new RendezvousError('INVALID_OPTION', 'malformed peer destination');
  const ts = Math.floor(nowMs / 1000);
  const nonce = newNonce();
  return Buffer.from(`PEER-LINK ${ts} ${nonce} ${signHello(secret, ts, nonce, to)}${bound(to)}\n`, 'latin1');
}

/** True when `line` is a hello (to be checked with `verifyPeerHello`), not a request. */
export function isPeerHello(line: string): boolean {
  return line.startsWith('PEER-LINK ');
}

/**
 * Verifies a pooled link's hello, and with `self` its destination; throws PROTOCOL or
 * AUTH_FAILED (a replayed nonce, a hello for another relay included).
 */
export function verifyPeerHello(
  secret: string,
  line: string,
  nowMs = Date.now(),
  nonces?: PeerNonces,
  self?: PeerSelf,
): void {
  const m =
    /^PEER-LINK ([0-9]{1,12}) ([A-Za-z0-9_-]{22}) ([A-Za-z0-9_-]{43})(?: to=([A-Za-z0-9-]{1,64}))?$/.exec(
      line,
    );
  if (!m) throw new RendezvousError('PROTOCOL', 'malformed peer line');
  const [, tsText, nonce, mac, to] = m as unknown as [string, string, string, string, string | undefined];
  const ts = Number(tsText);
  const fresh = Math.abs(ts - nowMs / 1000) <= PEER_CLOCK_SKEW_SECONDS;
  const valid = secretsEqual(signHello(secret, ts, nonce, to), mac);
  if (!valid || !fresh) throw new RendezvousError('AUTH_FAILED', 'peer authentication failed');
  checkDestination(to, self);
  if (nonces && !nonces.remember(nonce, ts + PEER_CLOCK_SKEW_SECONDS + 1, Math.floor(nowMs / 1000))) {
    throw new RendezvousError('AUTH_FAILED', 'peer line replayed');
  }
}

/**
 * Nonces of peer lines already honoured, each kept until its line could no longer pass the
 * freshness check; bounded (a flood of valid lines needs the cluster secret anyway).
 */
export class PeerNonces {
  private readonly seen = new Map<string, number>();

  constructor(private readonly max = 100_000) {}

  /** Records `nonce` (valid until `expiresAtS`); false when it was seen already. */
  remember(nonce: string, expiresAtS: number, nowS: number): boolean {
    if (this.seen.size >= this.max || this.seen.size % 1024 === 0) {
      for (const [n, until] of this.seen) if (until < nowS) this.seen.delete(n);
    }
    if (this.seen.has(nonce)) return false;
    // Still full of live nonces: refuse rather than forget one (a replay must never pass).
    if (this.seen.size >= this.max) return false;
    this.seen.set(nonce, expiresAtS);
    return true;
  }
}

/**
 * Decodes and verifies a peer line, and with `self` its destination; throws PROTOCOL or
 * AUTH_FAILED (a replayed nonce, a line for another relay included).
 */
export function verifyPeerLine(
  secret: string,
  line: string,
  nowMs = Date.now(),
  nonces?: PeerNonces,
  self?: PeerSelf,
): PeerRequest {
  const m =
    /^PEER ([RH]) ([A-Za-z0-9._:-]{1,128}) ([0-9]{1,5}) ([0-9]{1,12}) ([A-Za-z0-9_-]{22}) ([A-Za-z0-9_-]{43})(?: rid=([A-Za-z0-9_-]{16}) from=([A-Za-z0-9-]{1,64}))?(?: to=([A-Za-z0-9-]{1,64}))?$/.exec(
      line,
    );
  if (!m) throw new RendezvousError('PROTOCOL', 'malformed peer line');
  const [, k, key, waitText, tsText, nonce, mac, rid, from, to] = m as unknown as string[] as [
    string,
    string,
    string,
    string,
    string,
    string,
    string,
    string | undefined,
    string | undefined,
    string | undefined,
  ];
  const tag = rid !== undefined && from !== undefined ? { rid, from } : undefined;
  const ts = Number(tsText);
  const waitMs = Number(waitText);
  const fresh = Math.abs(ts - nowMs / 1000) <= PEER_CLOCK_SKEW_SECONDS && waitMs <= MAX_PEER_WAIT_MS;
  // Compare first, always, so timing says nothing about which check failed.
  const valid = secretsEqual(sign(secret, { k, key, waitMs, ts, nonce, tag, to }), mac);
  if (!valid || !fresh) throw new RendezvousError('AUTH_FAILED', 'peer authentication failed');
  checkDestination(to, self);
  if (nonces && !nonces.remember(nonce, ts + PEER_CLOCK_SKEW_SECONDS + 1, Math.floor(nowMs / 1000))) {
    throw new RendezvousError('AUTH_FAILED', 'peer line replayed');
  }
  const req: PeerRequest = {
    kind: k === 'R' ? 'generic' : 'http',
    key,
    waitMs,
  };
  if (tag) req.tag = tag;
  return req;
}
