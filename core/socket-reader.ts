/**
 * Reading a bounded preamble (a status line, a response head) from a socket without consuming
 * what follows it. Paused-mode reads: once done, the 'readable' listener is removed, the bytes
 * after the preamble are unshifted and the socket is back in Node's initial state, so the caller
 * uses it like a fresh socket (on('data'), pipe, splice).
 */
import type { Socket } from 'node:net';
import { RendezvousError } from './errors.js';

/** Feeds chunks to `decode` until it returns a value (the preamble) or throws. */
export function readPreamble<T>(
  socket: Socket,
  decode: (chunk: Buffer) => { value: T; rest: Buffer } | null,
  opts: { timeoutMs?: number; signal?: AbortSignal; what: string },
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = opts.timeoutMs
      ? setTimeout(
          () => fail(new RendezvousError('UNREACHABLE', `no ${opts.what} in time`, { permanent: false })),
          opts.timeoutMs,
        )
      : undefined;
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('error', onError);
      socket.off('end', onEnd);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    const fail = (err: Error) => {
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onAbort = () => fail(new RendezvousError('ABORTED', 'aborted'));
    const onError = (err: Error) =>
      fail(
        new RendezvousError('UNREACHABLE', `connection failed: ${err.message}`, {
          permanent: false,
          cause: err,
        }),
      );
    const onEnd = () =>
      fail(new RendezvousError('UNREACHABLE', `connection closed before ${opts.what}`, { permanent: false }));
    const onReadable = () => {
      for (;;) {
        const chunk = socket.read() as Buffer | null;
        if (chunk === null) return;
        let out: { value: T; rest: Buffer } | null;
        try {
          out = decode(chunk);
        } catch (err) {
          fail(err as Error);
          return;
        }
        if (out) {
          cleanup();
          if (out.rest.length > 0) socket.unshift(out.rest);
          resolve(out.value);
          return;
        }
      }
    };
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort);
    socket.on('error', onError);
    socket.on('end', onEnd);
    socket.on('readable', onReadable);
  });
}
