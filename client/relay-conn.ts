/** Dialling a relay: connect, send the cookie line, read the status line. */
import { connect, type Socket } from 'node:net';
import { RendezvousError } from '../core/errors.js';
import type { RendezvousTriple } from '../core/registration.js';
import { encodeCookieLine, LineDecoder, MAX_STATUS_LINE, parseStatusLine } from '../core/relay-line.js';
import { readPreamble } from '../core/socket-reader.js';

/** Time allowed for the TCP connect to a relay. */
export const CONNECT_TIMEOUT_MS = 10_000;

/** Connects with half-close allowed (the far side's FIN must not end our write side). */
export function connectTcp(host: string, port: number, signal?: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, allowHalfOpen: true });
    socket.setNoDelay(true);
    const done = (err?: Error) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.off('error', done);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve(socket);
    };
    const timer = setTimeout(
      () => done(new RendezvousError('UNREACHABLE', 'relay connect timeout', { permanent: false })),
      CONNECT_TIMEOUT_MS,
    );
    const onAbort = () => done(new RendezvousError('ABORTED', 'aborted'));
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort);
    socket.once('error', (err) =>
      done(
        new RendezvousError('UNREACHABLE', `relay unreachable: ${err.message}`, {
          permanent: false,
          cause: err,
        }),
      ),
    );
    socket.once('connect', () => done());
  });
}

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
  const socket = await connectTcp(triple.host, triple.port, opts.signal);
  socket.write(encodeCookieLine(triple.cookie));
  opts.onConnected?.(socket);
  const decoder = new LineDecoder(MAX_STATUS_LINE);
  const status = await readPreamble(
    socket,
    (chunk) => {
      let d: ReturnType<LineDecoder['push']>;
      try {
        d = decoder.push(chunk);
      } catch {
        throw new RendezvousError('PROTOCOL', 'status line from relay too long');
      }
      return d && { value: parseStatusLine(d.line), rest: d.rest };
    },
    { timeoutMs: opts.statusTimeoutMs, signal: opts.signal, what: 'status from relay' },
  );
  if (!status.ok) {
    socket.destroy();
    throw new RendezvousError('RELAY_REFUSED', status.diagnostic, { permanent: false });
  }
  return { socket };
}
