/** Dialling a relay: connect (TLS when the triple offers it), send the cookie line, read the status line. */
import { isIP, type Socket } from 'node:net';
import { type ConnectionOptions, connect as connectTlsSocket } from 'node:tls';
import { RendezvousError } from '../core/errors.js';
import { encodeCookieLine } from '../core/relay-line.js';
import { connectTcp, expectOk } from '../core/socket-reader.js';
import type { RendezvousTriple } from '../core/triple.js';

/** Time allowed for the TCP connect to a relay. */
export const CONNECT_TIMEOUT_MS = 10_000;

/** The triple's TLS port, if it names a valid one (the field is additive; anything else is ignored). */
export function tlsPortOf(triple: RendezvousTriple): number | undefined {
  const p = triple.tlsPort;
  return typeof p === 'number' && Number.isInteger(p) && p > 0 && p < 65536 ? p : undefined;
}

/**
 * Connects with TLS to `host:port`: TCP first (half-close allowed, no Nagle delay, as for plain
 * relays), then the handshake, verifying the relay's certificate against `host` (the system's
 * CAs, plus NODE_EXTRA_CA_CERTS). Rejects with UNREACHABLE (refused, handshake failed, not
 * secure within `timeoutMs`) or ABORTED.
 */
async function connectTls(
  host: string,
  port: number,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<Socket> {
  const tcp = await connectTcp(host, port, opts);
  return new Promise((resolve, reject) => {
    // SNI carries names only; an IP literal is checked against the certificate's IP entries.
    // allowHalfOpen is honoured by tls.connect with `socket` but missing from its typings.
    const options = { socket: tcp, servername: isIP(host) ? undefined : host, allowHalfOpen: true };
    const socket = connectTlsSocket(options as ConnectionOptions);
    const done = (err?: Error) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      socket.off('error', onError);
      socket.off('secureConnect', onSecure);
      if (err) {
        socket.destroy();
        tcp.destroy();
        reject(err);
      } else resolve(socket);
    };
    const onError = (err: Error) =>
      done(
        new RendezvousError('UNREACHABLE', `TLS to ${host}:${port} failed: ${err.message}`, {
          permanent: false,
          cause: err,
        }),
      );
    const onSecure = () => done();
    const onAbort = () => done(new RendezvousError('ABORTED', 'aborted'));
    const timer = setTimeout(
      () =>
        done(
          new RendezvousError('UNREACHABLE', `TLS handshake timeout ${host}:${port}`, { permanent: false }),
        ),
      opts.timeoutMs,
    );
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort);
    socket.once('error', onError);
    socket.once('secureConnect', onSecure);
  });
}

/**
 * Connects to the relay of `triple` (over TLS on `tlsPort` when the triple has one, so the cookie
 * never crosses the network in clear; else plain TCP on `port`), sends its cookie and resolves on
 * `+OK` with the socket (bytes after `+OK` unshifted, nothing read yet). Rejects with RELAY_REFUSED
 * (the `-ERR` diagnostic) or UNREACHABLE. `statusTimeoutMs` bounds the wait for the status line
 * (none for a parked hidden server, which may wait for days). `onConnected` sees the socket while
 * it waits.
 */
export async function dialRelay(
  triple: RendezvousTriple,
  opts: { statusTimeoutMs?: number; signal?: AbortSignal; onConnected?: (s: Socket) => void } = {},
): Promise<{ socket: Socket }> {
  const tlsPort = tlsPortOf(triple);
  const connectOpts = { timeoutMs: CONNECT_TIMEOUT_MS, signal: opts.signal };
  const socket = tlsPort
    ? await connectTls(triple.host, tlsPort, connectOpts)
    : await connectTcp(triple.host, triple.port, connectOpts);
  socket.write(encodeCookieLine(triple.cookie));
  opts.onConnected?.(socket);
  await expectOk(socket, { timeoutMs: opts.statusTimeoutMs, signal: opts.signal, what: 'status from relay' });
  return { socket };
}
