/**
 * One generic-protocol connection: read the cookie line under a deadline and a size limit,
 * check the cookie against the store, then park it (`R`, hidden server) or pair it (`I`, mobile
 * client). Whatever goes wrong ends this connection alone with `-ERR`.
 */
import type { Socket } from 'node:net';
import { isRendezvousError, quotaExceeded, RendezvousError } from '../core/errors.js';
import { encodeOkLine, LineDecoder, MAX_COOKIE_LINE, parseCookieLine } from '../core/relay-line.js';
import { mobileCookieFor } from '../server/cookies.js';
import type { RelayContext } from './context.js';
import { claimHiddenServer } from './pairing.js';
import type { Parked } from './parking.js';
import { refuse } from './refuse.js';
import {
  newRid,
  type RefusalReason,
  type RendezvousStart,
  refusalReason,
  type TargetState,
} from './telemetry.js';

/** How a handshake's bytes are read, and where its outcome goes. */
export interface HandshakeReader<T> {
  /** Consumes a chunk; the decoded handshake once complete, else null (throws when malformed). */
  decode: (chunk: Buffer) => T | null;
  onDone: (result: T) => void;
  onError: (err: Error) => void;
}

/** Reads one line from a fresh socket under the handshake deadline. */
export function readHandshake<T>(
  socket: Socket,
  ctx: RelayContext,
  { decode, onDone, onError }: HandshakeReader<T>,
): void {
  const admission = ctx.admit(socket);
  if (!admission.ok) {
    onError(new RendezvousError('BUSY', admission.reason, { permanent: false, retryAfter: 1 }));
    return;
  }
  const deadline = setTimeout(() => {
    done();
    onError(new RendezvousError('HANDSHAKE_TIMEOUT', 'handshake timeout'));
  }, ctx.limits.handshakeTimeoutMs);
  const onEnd = () => {
    done();
    socket.destroy();
  };
  const onData = (chunk: Buffer) => {
    let decoded: T | null;
    try {
      decoded = decode(chunk);
    } catch (err) {
      done();
      onError(err as Error);
      return;
    }
    if (!decoded) return;
    done();
    // Hold further bytes in the kernel (backpressure) until the session knows where they go.
    socket.pause();
    onDone(decoded);
  };
  const done = () => {
    admission.release();
    clearTimeout(deadline);
    socket.off('data', onData);
    socket.off('end', onEnd);
  };
  socket.on('data', onData);
  socket.on('end', onEnd);
}

/** Runs the generic-protocol handshake of one accepted socket. */
export function startSession(socket: Socket, ctx: RelayContext): void {
  const acceptedAt = Date.now();
  const decoder = new LineDecoder(MAX_COOKIE_LINE);
  readHandshake(socket, ctx, {
    decode: (chunk) => decoder.push(chunk),
    onDone: (d) => dispatch(socket, ctx, d, acceptedAt),
    onError: (err) => fail(socket, ctx, err),
  });
}

/** What a session knows of its client once its line is read. */
interface Line {
  role: 'hidden' | 'mobile';
  /** The mobile cookie (the key of everything; an R line's cookie is mapped to it). */
  cookie: string;
  /** The client asked for `+OK rid=<rid>`. */
  wantsRid: boolean;
  /** R only: the agent asked for this relay's direct address with its `+OK` (`direct`). */
  wantsDirect?: true;
  target?: TargetState;
  acceptedAt: number;
}

/** A client whose cookie resolved: its line, its identity (and its registration's generation), and the bytes it sent after the line. */
interface Settled {
  line: Line;
  uuid: string;
  generation?: number;
  early: Buffer;
}

function dispatch(
  socket: Socket,
  ctx: RelayContext,
  { line: text, rest }: { line: string; rest: Buffer },
  acceptedAt: number,
): void {
  let line: Line;
  try {
    const parsed = parseCookieLine(text);
    // R carries the hidden server's secret cookie; everything is keyed by the mobile cookie
    // derived from it, which is what I carries (and what the public look-up hands out).
    line = {
      role: parsed.role,
      cookie: parsed.role === 'hidden' ? mobileCookieFor(parsed.cookie) : parsed.cookie,
      wantsRid: parsed.rid === true,
      wantsDirect: parsed.direct,
      target: parsed.target,
      acceptedAt,
    };
  } catch (err) {
    fail(socket, ctx, err);
    return;
  }
  // The fast path, with no promise in it: a cookie checked within the last second, the
  // identity's limits (and month total, when it has a quota) known and, for a mobile client, a
  // hidden server parked right here. Anything else takes the general path.
  const binding = ctx.cookies.peek(line.cookie);
  const quota = binding && ctx.identityLimits.quotaNow(binding.uuid);
  if (binding && quota) {
    try {
      if (quota === 'exceeded') throw quotaExceeded();
      const settled: Settled = { line, uuid: binding.uuid, generation: binding.generation, early: rest };
      if (line.role === 'hidden') {
        settleHidden(socket, ctx, settled);
        return;
      }
      if (pairHere(socket, ctx, settled)) return;
    } catch (err) {
      fail(socket, ctx, err, binding.uuid);
      return;
    }
  }
  void settle(socket, ctx, line, rest);
}

/** Refuses with `-ERR`: counted and logged (rate-limited) by reason, with the uuid when known. */
function fail(socket: Socket, ctx: RelayContext, err: unknown, uuid?: string): void {
  if (!isRendezvousError(err)) ctx.log.error('session failed', { error: String(err) });
  refuseGeneric(socket, ctx, {
    reason: refusalReason(err),
    diagnostic: isRendezvousError(err) ? err.message : 'internal error',
    uuid,
  });
}

/** Why a generic-protocol client is refused: the record's reason, the `-ERR` text, the uuid when known. */
export interface GenericRefusal {
  reason: RefusalReason;
  diagnostic: string;
  uuid?: string;
}

/** The generic protocol's one way of saying no: a refusal record, then `-ERR <diagnostic>`. */
export function refuseGeneric(
  socket: Socket,
  ctx: RelayContext,
  { reason, diagnostic, uuid }: GenericRefusal,
): void {
  ctx.telemetry.refused(reason, { protocol: 'generic', uuid, source: socket.remoteAddress });
  refuse(socket, diagnostic);
}

async function settle(socket: Socket, ctx: RelayContext, line: Line, rest: Buffer): Promise<void> {
  let uuid: string | undefined;
  try {
    const binding = await ctx.cookies.resolveCookie(line.cookie);
    uuid = binding.uuid;
    // Both sides: a mobile client is not paired, and an agent is told rather than parked uselessly.
    await ctx.identityLimits.checkQuota(uuid);
    if (socket.destroyed) return;
    const settled: Settled = { line, uuid: binding.uuid, generation: binding.generation, early: rest };
    if (line.role === 'hidden') settleHidden(socket, ctx, settled);
    else await pairMobileClient(socket, ctx, settled);
  } catch (err) {
    fail(socket, ctx, err, uuid);
  }
}

function settleHidden(socket: Socket, ctx: RelayContext, { line, uuid, generation, early }: Settled): void {
  if (early.length > 0)
    refuseGeneric(socket, ctx, { reason: 'early_data', diagnostic: 'data before +OK', uuid });
  else parkHiddenServer(socket, ctx, line, uuid, generation);
}

/**
 * The rendezvous's start, for its record at the end; `early` bytes went to the hidden side with
 * its `+OK`; `peerRelayId` names the holder when the hidden server is parked on another relay.
 */
function started(
  socket: Socket,
  ctx: RelayContext,
  { rid, uuid, early, peerRelayId }: { rid: string; uuid: string; early: number; peerRelayId?: string },
): RendezvousStart {
  return {
    rid,
    protocol: 'generic',
    uuid,
    hops: peerRelayId ? 1 : 0,
    hiddenRelayId: peerRelayId ?? ctx.relayId,
    mobileRelayId: ctx.relayId,
    source: socket.remoteAddress,
    toHiddenBefore: early,
    startedAt: Date.now(),
  };
}

/**
 * Pairs a mobile client with a hidden server parked on this relay, synchronously: one write of
 * `+OK` (and the client's early bytes) to each side, then the splice. False when none is parked here.
 */
function pairHere(socket: Socket, ctx: RelayContext, { line, uuid, early }: Settled): boolean {
  ctx.perUuid.check(uuid, socket.remoteAddress);
  const here = ctx.lot.take('generic', line.cookie);
  if (!here) return false;
  const rid = newRid();
  const ok = encodeOkLine(here.wantsRid ? rid : undefined, here.direct);
  here.socket.write(early.length > 0 ? Buffer.concat([ok, early]) : ok);
  socket.write(encodeOkLine(line.wantsRid ? rid : undefined));
  ctx.telemetry.paired('generic', 'local');
  ctx.telemetry.handshake('generic', line.acceptedAt);
  ctx.spliceHidden(here.socket, socket, started(socket, ctx, { rid, uuid, early: early.length }));
  return true;
}

/** Parks an `R` socket; sockets parked here with the uuid's older cookies are told `-ERR`. */
function parkHiddenServer(
  socket: Socket,
  ctx: RelayContext,
  line: Line,
  uuid: string,
  generation: number | undefined,
): void {
  const cookie = line.cookie;
  for (const old of ctx.lot.keysOfUuid('generic', uuid)) {
    if (old === cookie) continue;
    ctx.cookies.forget(old);
    for (const p of ctx.lot.takeAll('generic', old))
      refuseGeneric(p.socket, ctx, {
        reason: 'revoked',
        diagnostic: 'cookie replaced by a newer registration',
        uuid,
      });
  }
  ctx.keepAlive(socket);
  // Before the park, so the park record written for it can carry the agent's report at once.
  if (line.target) ctx.records.noteTarget('generic', cookie, line.target);
  const parked: Parked = { socket, kind: 'generic', key: cookie, uuid };
  if (line.wantsRid) parked.wantsRid = true;
  if (line.wantsDirect && ctx.records.origin.direct) parked.direct = ctx.records.origin.direct;
  if (generation !== undefined) parked.generation = generation;
  const ok = ctx.lot.park(parked, earlyDataOf(ctx));
  if (!ok)
    refuseGeneric(socket, ctx, {
      reason: 'too_many_parked',
      diagnostic: 'too many parked connections for this cookie',
      uuid,
    });
  else ctx.telemetry.handshake('generic', line.acceptedAt);
}

// One early-data handler per relay, not a closure per parked socket (a parked socket holds as
// little as it can).
const earlyData = new WeakMap<RelayContext, (p: Parked) => void>();
function earlyDataOf(ctx: RelayContext): (p: Parked) => void {
  let f = earlyData.get(ctx);
  if (!f) {
    f = (p) =>
      refuseGeneric(p.socket, ctx, { reason: 'early_data', diagnostic: 'data before +OK', uuid: p.uuid });
    earlyData.set(ctx, f);
  }
  return f;
}

/** Pairs an `I` socket with a hidden server parked here or on another relay. */
async function pairMobileClient(
  socket: Socket,
  ctx: RelayContext,
  { line, uuid, early }: Settled,
): Promise<void> {
  ctx.perUuid.check(uuid, socket.remoteAddress);
  const rid = newRid();
  const claimed = await claimHiddenServer(ctx.lot, ctx.cluster, {
    kind: 'generic',
    key: line.cookie,
    waitMs: ctx.limits.pairWaitMs,
    gone: () => socket.destroyed,
    beforeWait: () => ctx.waiting.enter(socket),
    request: { rid, relayId: ctx.relayId, onPeerAnswer: (ms) => ctx.telemetry.peerAnswered(ms) },
  });
  if (!claimed)
    return refuseGeneric(socket, ctx, {
      reason: 'no_hidden_server',
      diagnostic: 'no hidden server parked for this cookie',
      uuid,
    });
  const hidden = claimed.stream;
  if (socket.destroyed) {
    hidden.destroy();
    return;
  }
  if (early.length > 0) hidden.write(early);
  socket.write(encodeOkLine(line.wantsRid ? rid : undefined));
  ctx.telemetry.paired('generic', claimed.peerRelayId ? 'peer' : 'local');
  ctx.telemetry.handshake('generic', line.acceptedAt);
  const start = started(socket, ctx, { rid, uuid, early: early.length, peerRelayId: claimed.peerRelayId });
  ctx.spliceHidden(hidden, socket, start);
}
