/**
 * One generic-protocol connection: read the cookie line under a deadline and a size limit,
 * check the cookie against the store, then park it (`R`, hidden server) or pair it (`I`, mobile
 * client). Whatever goes wrong ends this connection alone with `-ERR`.
 */
import type { Socket } from 'node:net';
import { mobileCookieFor } from '../core/cookies.js';
import { isRendezvousError, RendezvousError } from '../core/errors.js';
import { LineDecoder, MAX_COOKIE_LINE, OK_LINE, parseCookieLine } from '../core/relay-line.js';
import type { RelayContext } from './context.js';
import { claimHiddenServer } from './pairing.js';
import { refuse } from './refuse.js';

/** Reads one line from a fresh socket under the handshake deadline. */
export function readHandshake<T>(
  socket: Socket,
  ctx: RelayContext,
  decode: (chunk: Buffer) => T | null,
  onDone: (result: T) => void,
  onError: (err: Error) => void,
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
  const decoder = new LineDecoder(MAX_COOKIE_LINE);
  readHandshake(
    socket,
    ctx,
    (chunk) => decoder.push(chunk),
    (d) => dispatch(socket, ctx, d.line, d.rest),
    (err) => refuse(socket, err.message),
  );
}

function dispatch(socket: Socket, ctx: RelayContext, line: string, rest: Buffer): void {
  let cookie: string;
  let role: 'hidden' | 'mobile';
  try {
    const parsed = parseCookieLine(line);
    role = parsed.role;
    // R carries the hidden server's secret cookie; everything is keyed by the mobile cookie
    // derived from it, which is what I carries (and what the public look-up hands out).
    cookie = role === 'hidden' ? mobileCookieFor(parsed.cookie) : parsed.cookie;
  } catch (err) {
    fail(socket, ctx, err);
    return;
  }
  // The fast path, with no promise in it: a cookie checked within the last second and, for a
  // mobile client, a hidden server parked right here. Anything else takes the general path.
  const binding = ctx.cookies.peek(cookie);
  if (binding) {
    try {
      if (role === 'hidden') {
        settleHidden(socket, ctx, cookie, binding.uuid, rest);
        return;
      }
      if (pairHere(socket, ctx, cookie, binding.uuid, rest)) return;
    } catch (err) {
      fail(socket, ctx, err);
      return;
    }
  }
  void settle(socket, ctx, role, cookie, rest);
}

function fail(socket: Socket, ctx: RelayContext, err: unknown): void {
  if (!isRendezvousError(err)) ctx.log.error('session failed', { error: String(err) });
  refuse(socket, isRendezvousError(err) ? err.message : 'internal error');
}

async function settle(
  socket: Socket,
  ctx: RelayContext,
  role: 'hidden' | 'mobile',
  cookie: string,
  rest: Buffer,
): Promise<void> {
  try {
    const binding = await ctx.cookies.resolveCookie(cookie);
    if (socket.destroyed) return;
    if (role === 'hidden') settleHidden(socket, ctx, cookie, binding.uuid, rest);
    else await pairMobileClient(socket, ctx, cookie, binding.uuid, rest);
  } catch (err) {
    fail(socket, ctx, err);
  }
}

function settleHidden(socket: Socket, ctx: RelayContext, cookie: string, uuid: string, rest: Buffer): void {
  if (rest.length > 0) refuse(socket, 'data before +OK');
  else parkHiddenServer(socket, ctx, cookie, uuid);
}

/**
 * Pairs a mobile client with a hidden server parked on this relay, synchronously: one write of
 * `+OK` (and the client's early bytes) to each side, then the splice. False when none is parked here.
 */
function pairHere(socket: Socket, ctx: RelayContext, cookie: string, uuid: string, early: Buffer): boolean {
  ctx.perUuid.check(uuid);
  const here = ctx.lot.take('generic', cookie);
  if (!here) return false;
  here.socket.write(early.length > 0 ? Buffer.concat([OK_LINE, early]) : OK_LINE);
  socket.write(OK_LINE);
  ctx.spliceHidden(here.socket, socket, uuid);
  return true;
}

/** Parks an `R` socket; sockets parked here with the uuid's older cookies are told `-ERR`. */
function parkHiddenServer(socket: Socket, ctx: RelayContext, cookie: string, uuid: string): void {
  for (const old of ctx.lot.keysOfUuid('generic', uuid)) {
    if (old === cookie) continue;
    ctx.cookies.forget(old);
    for (const p of ctx.lot.takeAll('generic', old))
      refuse(p.socket, 'cookie replaced by a newer registration');
  }
  ctx.keepAlive(socket);
  const parked = ctx.lot.park({ socket, kind: 'generic', key: cookie, uuid }, (p) =>
    refuse(p.socket, 'data before +OK'),
  );
  if (!parked) refuse(socket, 'too many parked connections for this cookie');
}

/** Pairs an `I` socket with a hidden server parked here or on another relay. */
async function pairMobileClient(
  socket: Socket,
  ctx: RelayContext,
  cookie: string,
  uuid: string,
  early: Buffer,
): Promise<void> {
  ctx.perUuid.check(uuid);
  const hidden = await claimHiddenServer(
    ctx.lot,
    ctx.cluster,
    'generic',
    cookie,
    ctx.limits.pairWaitMs,
    () => socket.destroyed,
    () => ctx.waiting.enter(socket),
  );
  if (!hidden) return refuse(socket, 'no hidden server parked for this cookie');
  if (socket.destroyed) {
    hidden.destroy();
    return;
  }
  if (early.length > 0) hidden.write(early);
  socket.write(OK_LINE);
  ctx.spliceHidden(hidden, socket, uuid);
}
