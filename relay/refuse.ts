/** Ending a connection with a last answer — `-ERR <diagnostic>\n` or an HTTP error — the one way the relay says no. */
import type { Socket } from 'node:net';
import { encodeErrorLine } from '../core/relay-line.js';

/** How long a refused peer gets to read the `-ERR` line before the socket is destroyed. */
export const REFUSE_LINGER_MS = 2_000;

/** Writes `-ERR <diagnostic>\n` and closes (see `endWith`). */
export function refuse(socket: Socket, diagnostic: string): void {
  endWith(socket, encodeErrorLine(diagnostic));
}

/**
 * Writes a last answer (a `-ERR` line, an HTTP error) and closes. Reading goes on (discarded)
 * until the peer closes or the linger ends, because closing with unread input makes the kernel
 * send RST, which can destroy the answer before the peer reads it.
 */
export function endWith(socket: Socket, answer: Buffer): void {
  if (socket.destroyed || socket.writableEnded) {
    socket.destroy();
    return;
  }
  socket.removeAllListeners('data');
  socket.removeAllListeners('end');
  socket.on('data', () => {});
  socket.on('end', () => socket.destroy());
  socket.on('error', () => {});
  socket.end(answer);
  socket.resume();
  const linger = setTimeout(() => socket.destroy(), REFUSE_LINGER_MS).unref();
  // Cleared on close, so a flood of refusals does not keep thousands of sockets alive for the linger.
  socket.once('close', () => clearTimeout(linger));
}
