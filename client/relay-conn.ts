/** Dialling a relay: connect, send the cookie line, read the status line. */
import type { Socket } from 'node:net';
import type { RendezvousTriple } from '../core/registration.js';
import { encodeCookieLine } from '../core/relay-line.js';
import { connectTcp, expectOk } from '../core/socket-reader.js';

/** Time allowed for the TCP connect to a relay. */
export const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Connects to the relay of `triple`, sends its cookie and resolves on `+OK` with the socket
 * (bytes after `+OK` unshifted, nothing read yet). Rejects with RELAY_REFUSED (the `-ERR`
 * diagnostic) or UNREACHABLE. `statusTimeoutMs` bounds the wait for the status line (none for a
 * parked hidden server, which may wait for days). `onConnected` sees the socket while it waits.
 */
export async function dialRelay(
  triple: RendezvousTriple,
  opts: { statusTimeoutMs?: number; signal?: AbortSignal; onConnected?: (s: Socket) => void } = {},
): Promise<{ socket: Socket }> {
  const socket = await connectTcp(triple.host, triple.port, {
    timeoutMs: CONNECT_TIMEOUT_MS,
    signal: opts.signal,
  });
  socket.write(encodeCookieLine(triple.cookie));
  opts.onConnected?.(socket);
  await expectOk(socket, { timeoutMs: opts.statusTimeoutMs, signal: opts.signal, what: 'status from relay' });
  return { socket };
}
