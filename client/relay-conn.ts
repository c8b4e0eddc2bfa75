/**
 * Dialling a relay: connect (TLS when the triple offers it), send the cookie line (with the wire
 * options the relay understands), read the status line (`+OK`, `+OK rid=<rid>`, or `-ERR …`).
 * `connectRelay` is the one TCP/TLS dial of both protocols: the HTTP-specific one reaches its
 * `http(s)://` relay through it too (`connectHttpRelay`), with the same timeouts and TLS checks.
 */
import { isIP, type Socket } from 'node:net';
import { type ConnectionOptions, connect as connectTlsSocket } from 'node:tls';
import { isRendezvousError, quotaExceeded, RendezvousError } from '../core/errors.js';
import { directOfOkLine, encodeCookieLine, type TargetState } from '../core/relay-line.js';
import { connectTcp, expectOk } from '../core/socket-reader.js';
import type { RendezvousTriple } from '../core/triple.js';

/** One wire option on a cookie or status line: `name` or `name=value` (the relay's grammar). */
const WIRE_OPTION = /^[a-z][a-z0-9-]*(=[A-Za-z0-9._-]{1,32})?$/;
/** A correlation id as the relay makes them (16 base64url chars); a little slack for other relays. */
const RID = /^[A-Za-z0-9_-]{1,32}$/;

/**
 * The wire options the relay of `triple` understands, as the API answer lists them
 * (`"relayOptions": ["rid","target"]`). Empty against the original servers, which never send
 * the field: they then get exactly the original lines (`R<c>\n`, and `+OK\n` back).
 */
export function relayOptionsOf(triple: RendezvousTriple): ReadonlySet<string> {
  const list = (triple as { relayOptions?: unknown }).relayOptions;
  if (!Array.isArray(list)) return new Set();
  return new Set(list.filter((o): o is string => typeof o === 'string' && WIRE_OPTION.test(o)));
}

/**
 * The cookie line's text for `triple` (without its newline): `R<c>`, `R<c> rid target=up`,
 * `I<c> rid` — each option only when the relay understands it, `target` only on a park and only
 * when the agent knows its target's state, `direct` only on a park of a plain-TCP triple.
 */
export function cookieLineText(triple: RendezvousTriple, target?: TargetState): string {
  const known = relayOptionsOf(triple);
  const options: string[] = [];
  if (known.has('rid')) options.push('rid');
  if (target && known.has('target') && triple.cookie.startsWith('R')) options.push(`target=${target}`);
  // Where the agent could follow it: a TLS triple's cookie must not go to a plain direct port.
  if (known.has('direct') && triple.cookie.startsWith('R') && !tlsPortOf(triple)) options.push('direct');
  return options.length ? `${triple.cookie} ${options.join(' ')}` : triple.cookie;
}

/**
 * The options after `+OK` (`+OK rid=abc` → `{rid: 'abc'}`); tokens of another shape are ignored,
 * as the relay ignores unknown options, so a newer relay cannot break an older agent.
 */
export function parseOkOptions(statusText: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const token of statusText.slice(3).trim().split(/\s+/)) {
    if (!token || !WIRE_OPTION.test(token)) continue;
    const eq = token.indexOf('=');
    if (eq === -1) out[token] = '';
    else out[token.slice(0, eq)] = token.slice(eq + 1);
  }
  return out;
}

/** What a successful dial gives: the paired socket and the rendezvous's correlation id, if the relay sent one. */
export interface Dialled {
  socket: Socket;
  rid?: string;
  /** The relay's direct address, when its `+OK` named one (`direct=`, asked by a park). */
  direct?: { host: string; port: number };
}

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
 * Connects to a relay at `host:port`, with TLS when `tls` (see connectTls), else plain TCP (half-close
 * allowed, no Nagle delay). Both the TCP connect and the TLS handshake are bounded by
 * CONNECT_TIMEOUT_MS; `signal` aborts either. Rejects with UNREACHABLE or ABORTED.
 */
export function connectRelay(
  host: string,
  port: number,
  opts: { tls: boolean; signal?: AbortSignal; timeoutMs?: number },
): Promise<Socket> {
  const connectOpts = { timeoutMs: opts.timeoutMs ?? CONNECT_TIMEOUT_MS, signal: opts.signal };
  return opts.tls ? connectTls(host, port, connectOpts) : connectTcp(host, port, connectOpts);
}

/** Connects to the relay's HTTP-specific endpoint `relayUrl` (`http://host:port`, or TLS for `https://host[:port]`). */
export function connectHttpRelay(relayUrl: string, signal?: AbortSignal): Promise<Socket> {
  const url = new URL(relayUrl);
  const tls = url.protocol === 'https:';
  return connectRelay(url.hostname, Number(url.port) || (tls ? 443 : 80), { tls, signal });
}

/**
 * The typed error a relay's `-ERR` diagnostic stands for when it is a limit of the identity's
 * (issue 30): `quota exceeded` (its monthly quota is spent: QUOTA_EXCEEDED, retry after the
 * next UTC month) or `too many live rendezvous …` (its concurrency cap: BUSY, soon over).
 * Undefined for any other refusal, which stays RELAY_REFUSED.
 */
export function limitRefusal(diagnostic: string): RendezvousError | undefined {
  if (/^quota exceeded\b/i.test(diagnostic)) return quotaExceeded();
  if (/^too many live rendezvous\b/i.test(diagnostic))
    return new RendezvousError('BUSY', diagnostic, { permanent: false });
  return undefined;
}

/** `host:port` of the relay a triple points at (the TLS port when it is used): for logs. */
export function relayAddressOf(triple: RendezvousTriple): string {
  return `${triple.host}:${tlsPortOf(triple) ?? triple.port}`;
}

/**
 * Connects to the relay of `triple` (over TLS on `tlsPort` when the triple has one, so the cookie
 * never crosses the network in clear; else plain TCP on `port`), sends its cookie line and resolves
 * on `+OK` with the socket (bytes after `+OK` unshifted, nothing read yet) and the `rid` the relay
 * sent with it. Rejects with RELAY_REFUSED (the `-ERR` diagnostic), QUOTA_EXCEEDED or BUSY (the
 * `-ERR` of a limit: see `limitRefusal`), or UNREACHABLE.
 * `statusTimeoutMs` bounds the wait for the status line (none for a parked hidden server, which
 * may wait for days). `onConnected` sees the socket while it waits. `target` is the agent's
 * knowledge of its target, sent as `target=` where the relay understands it.
 */
export async function dialRelay(
  triple: RendezvousTriple,
  opts: {
    statusTimeoutMs?: number;
    signal?: AbortSignal;
    onConnected?: (s: Socket) => void;
    /** Read when the line is written, so a park made while the target changed tells the news. */
    target?: () => TargetState | undefined;
    /** Bound on the TCP connect (and TLS handshake); default CONNECT_TIMEOUT_MS. */
    connectTimeoutMs?: number;
  } = {},
): Promise<Dialled> {
  const tlsPort = tlsPortOf(triple);
  const socket = await connectRelay(triple.host, tlsPort ?? triple.port, {
    tls: !!tlsPort,
    signal: opts.signal,
    timeoutMs: opts.connectTimeoutMs,
  });
  socket.write(encodeCookieLine(cookieLineText(triple, opts.target?.())));
  opts.onConnected?.(socket);
  let text: string;
  try {
    text = await expectOk(socket, {
      timeoutMs: opts.statusTimeoutMs,
      signal: opts.signal,
      what: 'status from relay',
    });
  } catch (err) {
    throw (isRendezvousError(err, 'RELAY_REFUSED') && limitRefusal(err.message)) || err;
  }
  const rid = parseOkOptions(text).rid;
  const out: Dialled = rid && RID.test(rid) ? { socket, rid } : { socket };
  const direct = directOfOkLine(text);
  if (direct) out.direct = direct;
  return out;
}
