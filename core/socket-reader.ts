/**
 * Reading a bounded preamble (a status line, a response head) from a socket without consuming
 * what follows it. Paused-mode reads: once done, the 'readable' listener is removed, the bytes
 * after the preamble are unshifted and the socket is back in Node's initial state, so the caller
 * uses it like a fresh socket (on('data'), pipe, splice).
 */
import { connect, type Socket } from 'node:net';
import { RendezvousError } from './errors.js';
import { LineDecoder, MAX_STATUS_LINE, parseStatusLine } from './relay-line.js';

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

/**
 * Reads a relay's status line (`+OK` / `-ERR …`) and resolves with its text when it is `+OK`, leaving what
 * follows unread. Rejects with RELAY_REFUSED carrying the `-ERR` diagnostic (the socket is
 * destroyed), PROTOCOL for a line too long or malformed, or what `readPreamble` rejects with.
 */
export async function expectOk(
  socket: Socket,
  opts: { timeoutMs?: number; signal?: AbortSignal; what: string },
): Promise<string> {
  const decoder = new LineDecoder(MAX_STATUS_LINE);
  const status = await readPreamble(
    socket,
    (chunk) => {
      let d: ReturnType<LineDecoder['push']>;
      try {
        d = decoder.push(chunk);
      } catch {
        throw new RendezvousError('PROTOCOL', `${opts.what}: status line too long`);
      }
      return d && { value: parseStatusLine(d.line), rest: d.rest };
    },
    opts,
  );
  if (!status.ok) {
    socket.destroy();
    throw new RendezvousError('RELAY_REFUSED', status.diagnostic, { permanent: false });
  }
  return status.text;
}

/**
 * Connects with half-close allowed (the far side's FIN must not end our write side) and no
 * Nagle delay. Rejects with UNREACHABLE (refused, or not connected within `timeoutMs`) or ABORTED.
 */
export function connectTcp(
  host: string,
  port: number,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, allowHalfOpen: true });
    socket.setNoDelay(true);
    const done = (err?: Error) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      socket.off('error', onError);
      socket.off('connect', onConnect);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve(socket);
    };
    const onError = (err: Error) =>
      done(
        new RendezvousError('UNREACHABLE', `unreachable ${host}:${port}: ${err.message}`, {
          permanent: false,
          cause: err,
        }),
      );
    const onConnect = () => done();
    const onAbort = () => done(new RendezvousError('ABORTED', 'aborted'));
    const timer = setTimeout(
      () => done(new RendezvousError('UNREACHABLE', `connect timeout ${host}:${port}`, { permanent: false })),
      opts.timeoutMs,
    );
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort);
    socket.once('error', onError);
    socket.once('connect', onConnect);
  });
}
