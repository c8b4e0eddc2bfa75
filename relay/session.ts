/**
 * One relay connection's handshake: read the cookie line under a deadline and a size limit,
 * check the cookie against the store, then park it (hidden) or pair it (mobile). Whatever goes
 * wrong ends this connection alone with `-ERR`.
 */
import type { Socket } from 'node:net';
import { isRendezvousError } from '../core/errors.js';
import type { Log } from '../core/log.js';
import { LineDecoder, MAX_COOKIE_LINE, parseCookieLine } from '../core/relay-line.js';
import type { CookieBinding } from '../core/store.js';
import type { ParkingLot } from './pairing.js';
import { refuse } from './refuse.js';

/** What a session needs of the store. */
export interface CookieResolver {
  resolveCookie(cookie: string): Promise<CookieBinding>;
}

/** Per-connection limits. */
export interface SessionLimits {
  /** Time from accept to a complete cookie line. */
  handshakeTimeoutMs: number;
}

/** Runs the handshake of one accepted socket. */
export function startSession(
  socket: Socket,
  store: CookieResolver,
  lot: ParkingLot,
  limits: SessionLimits,
  log: Log,
): void {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  const decoder = new LineDecoder(MAX_COOKIE_LINE);

  const deadline = setTimeout(() => {
    done();
    refuse(socket, 'handshake timeout');
  }, limits.handshakeTimeoutMs);
  const onEnd = () => {
    done();
    socket.destroy();
  };
  const onData = (chunk: Buffer) => {
    let decoded: ReturnType<LineDecoder['push']>;
    try {
      decoded = decoder.push(chunk);
    } catch (err) {
      done();
      refuse(socket, (err as Error).message);
      return;
    }
    if (!decoded) return;
    done();
    // Hold further bytes in the kernel (backpressure) until the session knows where they go.
    socket.pause();
    void dispatch(decoded.line, decoded.rest);
  };
  const done = () => {
    clearTimeout(deadline);
    socket.off('data', onData);
    socket.off('end', onEnd);
  };
  socket.on('data', onData);
  socket.on('end', onEnd);

  const dispatch = async (line: string, rest: Buffer) => {
    try {
      const { role, cookie } = parseCookieLine(line);
      const binding = await store.resolveCookie(cookie);
      if (socket.destroyed) return;
      if (role === 'hidden') {
        if (rest.length > 0) {
          refuse(socket, 'data before +OK');
          return;
        }
        lot.parkHiddenServer(socket, cookie, binding.uuid);
      } else {
        lot.pairMobileClient(socket, cookie, rest);
      }
    } catch (err) {
      if (!isRendezvousError(err)) log.error('session failed', { error: String(err) });
      refuse(socket, isRendezvousError(err) ? err.message : 'internal error');
    }
  };
}
