/** Dialling a relay: connect, send the cookie line, read the status line. */
import { connect, type Socket } from 'node:net';
import { RendezvousError } from '../core/errors.js';
import type { RendezvousTriple } from '../core/registration.js';
import { encodeCookieLine, LineDecoder, MAX_STATUS_LINE, parseStatusLine } from '../core/relay-line.js';

/** Time allowed for the TCP connect to a relay. */
export const CONNECT_TIMEOUT_MS = 10_000;

/** A relay connection whose `+OK` arrived; bytes after it are unshifted, nothing is read yet. */
export interface PairedConnection {
  socket: Socket;
}

/**
 * Connects to the relay of `triple`, sends its cookie and resolves on `+OK`. Rejects with
 * RELAY_REFUSED (the `-ERR` diagnostic) or UNREACHABLE. `statusTimeoutMs` bounds the wait for
 * the status line (none for a parked hidden server, which may wait for days).
 */
export function dialRelay(
  triple: RendezvousTriple,
  opts: { statusTimeoutMs?: number; signal?: AbortSignal; onConnected?: (s: Socket) => void } = {},
): Promise<PairedConnection> {
  return new Promise((resolve, reject) => {
    // allowHalfOpen: the far side's FIN must not end our write side before we forward it.
    const socket = connect({ host: triple.host, port: triple.port, allowHalfOpen: true });
    socket.setNoDelay(true);
    const decoder = new LineDecoder(MAX_STATUS_LINE);
    let timer: NodeJS.Timeout | undefined = setTimeout(
      () => fail(new RendezvousError('UNREACHABLE', 'relay connect timeout', { permanent: false })),
      CONNECT_TIMEOUT_MS,
    );
    const cleanup = () => {
      clearTimeout(timer);
      timer = undefined;
      socket.off('readable', onReadable);
      socket.off('error', onError);
      socket.off('end', onEnd);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    const fail = (err: RendezvousError) => {
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onAbort = () => fail(new RendezvousError('ABORTED', 'aborted', { permanent: true }));
    const onError = (err: Error) =>
      fail(
        new RendezvousError('UNREACHABLE', `relay unreachable: ${err.message}`, {
          permanent: false,
          cause: err,
        }),
      );
    const onEnd = () =>
      fail(new RendezvousError('UNREACHABLE', 'relay closed the connection', { permanent: false }));
    // Paused-mode reads: once the 'readable' listener is gone the socket is back to Node's initial
    // state, so the caller uses it exactly like a fresh `net.connect` socket (on('data'), pipe, …).
    const onReadable = () => {
      for (;;) {
        const chunk = socket.read() as Buffer | null;
        if (chunk === null) return;
        if (onChunk(chunk)) return;
      }
    };
    const onChunk = (chunk: Buffer): boolean => {
      let decoded: ReturnType<LineDecoder['push']>;
      try {
        decoded = decoder.push(chunk);
      } catch {
        fail(new RendezvousError('PROTOCOL', 'status line from relay too long'));
        return true;
      }
      if (!decoded) return false;
      let status: ReturnType<typeof parseStatusLine>;
      try {
        status = parseStatusLine(decoded.line);
      } catch (err) {
        fail(err as RendezvousError);
        return true;
      }
      if (!status.ok) {
        fail(new RendezvousError('RELAY_REFUSED', status.diagnostic, { permanent: false }));
        return true;
      }
      cleanup();
      if (decoded.rest.length > 0) socket.unshift(decoded.rest);
      resolve({ socket });
      return true;
    };
    if (opts.signal?.aborted) {
      onAbort();
      return;
    }
    opts.signal?.addEventListener('abort', onAbort);
    socket.on('error', onError);
    socket.on('end', onEnd);
    socket.once('connect', () => {
      clearTimeout(timer);
      timer = opts.statusTimeoutMs
        ? setTimeout(
            () =>
              fail(new RendezvousError('UNREACHABLE', 'no status from relay in time', { permanent: false })),
            opts.statusTimeoutMs,
          )
        : undefined;
      socket.write(encodeCookieLine(triple.cookie));
      opts.onConnected?.(socket);
      socket.on('readable', onReadable);
    });
  });
}
