/**
 * The socket options of accepted client sockets, set once on the listening socket where the
 * kernel passes them on. On Linux an accepted socket inherits TCP_NODELAY, SO_KEEPALIVE and
 * TCP_KEEPIDLE from its listener, so setting them there saves three or four setsockopt calls per
 * connection (a tenth of a local pairing's CPU). The price: every accepted socket has keepalive,
 * not only parked ones; the kernel's keepalive timer on a short-lived socket costs nothing until it
 * has sat idle for the whole delay.
 *
 * Elsewhere (or should Node's listener handle lack the calls) nothing is set on the listener and
 * the relay sets the options per socket as before.
 */
import type { Server } from 'node:net';

/** What the listener handle of a `net.Server` offers (Node's TCPWrap; not a public API). */
interface ListenerHandle {
  setNoDelay?: (on: boolean) => number;
  setKeepAlive?: (on: boolean, delaySeconds: number) => number;
}

/**
 * Sets no-delay and keepalive (`keepAliveMs`, rounded down to whole seconds as Node does) on a
 * listening server's socket for its accepted sockets to inherit; true when done. Call after listen.
 */
export function setOnListener(server: Server, keepAliveMs: number): boolean {
  if (process.platform !== 'linux') return false;
  const handle = (server as unknown as { _handle?: ListenerHandle })._handle;
  if (typeof handle?.setNoDelay !== 'function' || typeof handle.setKeepAlive !== 'function') return false;
  return handle.setNoDelay(true) === 0 && handle.setKeepAlive(true, Math.floor(keepAliveMs / 1000)) === 0;
}
