/** Ending a connection with `-ERR <diagnostic>\n`, the one way the relay says no. */
import type { Socket } from 'node:net';
import { encodeErrorLine } from '../core/relay-line.js';

/** How long a refused peer gets to read the `-ERR` line before the socket is destroyed. */
export const REFUSE_LINGER_MS = 2_000;

/**
 * Writes `-ERR` and closes. Reading goes on (discarded) until the peer closes or the linger
 * ends, because closing with unread input makes the kernel send RST, which can destroy the
 * `-ERR` line before the peer reads it.
 */
export function refuse(socket: Socket, diagnostic: string): void {
  if (socket.destroyed || socket.writableEnded) {
    socket.destroy();
    return;
  }
  socket.removeAllListeners('data');
  socket.removeAllListeners('end');
  socket.on('data', () => {});
  socket.on('end', () => socket.destroy());
  socket.on('error', () => {});
  socket.end(encodeErrorLine(diagnostic));
  socket.resume();
  const linger = setTimeout(() => socket.destroy(), REFUSE_LINGER_MS).unref();
  // Cleared on close, so a flood of refusals does not keep thousands of sockets alive for the linger.
  socket.once('close', () => clearTimeout(linger));
}
