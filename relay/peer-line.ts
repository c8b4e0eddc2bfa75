/**
 * The relay-to-relay peer link request, one line, signed with the cluster secret so the secret
 * itself never crosses the wire:
 *
 *   "PEER" SP kind SP key SP wait-ms SP unix-seconds SP nonce SP mac [SP "rid=" rid SP "from=" relay-id] "\n"
 *   nonce = base64url(16 random bytes)          (22 characters)
 *   mac = base64url(HMAC-SHA256(secret, kind SP key SP wait-ms SP unix-seconds SP nonce [SP rid SP relay-id]))
 *   rid = the rendezvous's correlation id (16 base64url characters), relay-id = the asking relay's id
 *
 * The rendezvous's correlation id and the asking relay travel signed with the request, so the holder
 * logs the rendezvous under the same rid and names the relay its mobile client reached. A line
 * without them (an older relay) is still accepted.
 *
 * kind is "R" (generic protocol, key = cookie) or "H" (HTTP-specific, key = uuid); wait-ms is how
 * long the holder may wait for a socket to be parked there (queued fairly with its own mobile
 * clients). The answer is a relay status line: "+OK\n" then the parked socket's bytes, or "-ERR …\n".
 * The holder remembers each nonce for the line's validity window (`PeerNonces`) and refuses a
 * line it has seen: a captured line cannot be replayed.
 *
 * A pooled link (opened ahead of need, see relay/peer-pool.ts) starts with a hello, signed the
 * same way, that lets it wait idle for its request longer than an unauthenticated connection may:
 *
 *   "PEER-LINK" SP unix-seconds SP nonce SP mac "\n"
 *   mac = base64url(HMAC-SHA256(secret, "LINK" SP unix-seconds SP nonce))
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

/** Longest peer line, newline included. */
export const MAX_PEER_LINE = 320;
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

/** `host:port` (a park record's `peer`) → [host, port]. */
export function splitPeer(peer: string): [string, number] {
  const i = peer.lastIndexOf(':');
  return [peer.slice(0, i), Number(peer.slice(i + 1))];
}

const RID_SHAPE = /^[A-Za-z0-9_-]{16}$/;
const RELAY_ID_SHAPE = /^[A-Za-z0-9-]{1,64}$/;

/** The signed fields of a request line, as on the wire (`k` is "R" or "H"). */
interface SignedFields {
  k: string;
  key: string;
  waitMs: number;
  ts: number;
  nonce: string;
  tag?: PeerRequestTag;
}

const sign = (secret: string, { k, key, waitMs, ts, nonce, tag }: SignedFields) =>
  createHmac('sha256', secret)
    .update(`${k} ${key} ${waitMs} ${ts} ${nonce}${tag ? ` ${tag.rid} ${tag.from}` : ''}`)
    .digest('base64url');

/**
 * Encodes a peer request for `req.key` (`waitMs` default 0), tagged with the rendezvous's rid
 * and the asking relay when `req.tag` is given.
 */
export function encodePeerLine(
  secret: string,
  req: Omit<PeerRequest, 'waitMs'> & { waitMs?: number },
  nowMs = Date.now(),
): Buffer {
  const { kind, key, tag } = req;
  const k = kind === 'generic' ? 'R' : 'H';
  const ts = Math.floor(nowMs / 1000);
  const w = Math.max(0, Math.min(MAX_PEER_WAIT_MS, Math.round(req.waitMs ?? 0)));
  const nonce = newNonce();
  if (tag && !(RID_SHAPE.test(tag.rid) && RELAY_ID_SHAPE.test(tag.from)))
    throw new RendezvousError('INVALID_OPTION', 'malformed peer request tag');
  const extra = tag ? ` rid=${tag.rid} from=${tag.from}` : '';
  return Buffer.from(
    `PEER ${k} ${key} ${w} ${ts} ${nonce} ${sign(secret, { k, key, waitMs: w, ts, nonce, tag })}${extra}\n`,
    'latin1',
  );
}

/** The hello of a pooled peer link. */
export function encodePeerHello(secret: string, nowMs = Date.now()): Buffer {
  const ts = Math.floor(nowMs / 1000);
  const nonce = newNonce();
  const mac = createHmac('sha256', secret).update(`LINK ${ts} ${nonce}`).digest('base64url');
  return Buffer.from(`PEER-LINK ${ts} ${nonce} ${mac}\n`, 'latin1');
}

/** True when `line` is a hello (to be checked with `verifyPeerHello`), not a request. */
export function isPeerHello(line: string): boolean {
  return line.startsWith('PEER-LINK ');
}

/** Verifies a pooled link's hello; throws PROTOCOL or AUTH_FAILED (a replayed nonce included). */
export function verifyPeerHello(secret: string, line: string, nowMs = Date.now(), nonces?: PeerNonces): void {
  const m = /^PEER-LINK ([0-9]{1,12}) ([A-Za-z0-9_-]{22}) ([A-Za-z0-9_-]{43})$/.exec(line);
  if (!m) throw new RendezvousError('PROTOCOL', 'malformed peer line');
  const [, tsText, nonce, mac] = m as unknown as [string, string, string, string];
  const ts = Number(tsText);
  const fresh = Math.abs(ts - nowMs / 1000) <= PEER_CLOCK_SKEW_SECONDS;
  const valid = secretsEqual(
    createHmac('sha256', secret).update(`LINK ${ts} ${nonce}`).digest('base64url'),
    mac,
  );
  if (!valid || !fresh) throw new RendezvousError('AUTH_FAILED', 'peer authentication failed');
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

/** Decodes and verifies a peer line; throws PROTOCOL or AUTH_FAILED (a replayed nonce included). */
export function verifyPeerLine(
  secret: string,
  line: string,
  nowMs = Date.now(),
  nonces?: PeerNonces,
): PeerRequest {
  const m =
    /^PEER ([RH]) ([A-Za-z0-9._:-]{1,128}) ([0-9]{1,5}) ([0-9]{1,12}) ([A-Za-z0-9_-]{22}) ([A-Za-z0-9_-]{43})(?: rid=([A-Za-z0-9_-]{16}) from=([A-Za-z0-9-]{1,64}))?$/.exec(
      line,
    );
  if (!m) throw new RendezvousError('PROTOCOL', 'malformed peer line');
  const [, k, key, waitText, tsText, nonce, mac, rid, from] = m as unknown as string[] as [
    string,
    string,
    string,
    string,
    string,
    string,
    string,
    string | undefined,
    string | undefined,
  ];
  const tag = rid !== undefined && from !== undefined ? { rid, from } : undefined;
  const ts = Number(tsText);
  const waitMs = Number(waitText);
  const fresh = Math.abs(ts - nowMs / 1000) <= PEER_CLOCK_SKEW_SECONDS && waitMs <= MAX_PEER_WAIT_MS;
  // Compare first, always, so timing says nothing about which check failed.
  const valid = secretsEqual(sign(secret, { k, key, waitMs, ts, nonce, tag }), mac);
  if (!valid || !fresh) throw new RendezvousError('AUTH_FAILED', 'peer authentication failed');
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
