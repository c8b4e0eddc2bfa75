/** The mobile side as a library: reach a hidden server the way `net.connect` feels. */
import type { Socket } from 'node:net';
import { type ErrorCode, isRendezvousError, RendezvousError } from '../core/errors.js';
import type { RendezvousTriple } from '../core/triple.js';
import { errorBodyOf } from './answers.js';
import { type ApiUrls, lookupWithApi } from './api.js';
import { checkConnectOptions } from './options.js';
import { type Dialled, dialRelay } from './relay-conn.js';

/** Options of `connect`. */
export interface ConnectOptions {
  /**
   * Registration API base URL, or several (one per region; an array or a comma-separated string):
   * tried in order from the last that answered, failing over when one does not answer or answers
   * 5xx. A definite answer (404 not registered) is final.
   */
  api: ApiUrls;
  /** The hidden server to reach. */
  uuid: string;
  /** Bound on the whole attempt — look-up, relay connect, wait for `+OK` (default 15 s). */
  timeoutMs?: number;
  /** Aborts a pending attempt; it rejects at once with an ABORTED error. */
  signal?: AbortSignal;
}

/** The correlation id of each socket `connect` resolved to, when the relay sent one. */
const ridOf = new WeakMap<Socket, string>();

/**
 * The rendezvous's correlation id (`rid`) for a socket `connect` resolved to: the id the relay
 * and the hidden server's agent log for the same rendezvous. Undefined where the relay does not
 * offer it (the API answer lists no `rid` in `relayOptions`, e.g. the original servers).
 */
export function rendezvousIdOf(socket: Socket): string | undefined {
  return ridOf.get(socket);
}

/** Bound on the TCP connect to a relay the look-up named directly, before its fallback is tried. */
export const DIRECT_CONNECT_TIMEOUT_MS = 3_000;

/** The triple's `fallback` (the front, when `host:port` names the holding relay directly), if valid. */
function fallbackOf(triple: RendezvousTriple): RendezvousTriple | undefined {
  const f = triple.fallback as { host?: unknown; port?: unknown } | undefined;
  if (!f || typeof f.host !== 'string' || !f.host || typeof f.port !== 'number') return undefined;
  if (!Number.isInteger(f.port) || f.port <= 0 || f.port > 65535) return undefined;
  const { fallback: _named, ...rest } = triple;
  return { ...rest, host: f.host, port: f.port };
}

/**
 * Dials the relay of a look-up's triple. When the triple names the holding relay directly (it has
 * a `fallback`) and that relay cannot be reached (it died or is draining since the look-up: the
 * connect fails, or the connection ends before a status line), dials the fallback with the same
 * cookie. A relay's `-ERR` is its answer and is not retried.
 */
async function dialNamedRelay(
  triple: RendezvousTriple,
  opts: { statusTimeoutMs: number; signal: AbortSignal },
): Promise<Dialled> {
  const fallback = fallbackOf(triple);
  if (!fallback) return dialRelay(triple, opts);
  try {
    return await dialRelay(triple, { ...opts, connectTimeoutMs: DIRECT_CONNECT_TIMEOUT_MS });
  } catch (err) {
    if (!isRendezvousError(err, 'UNREACHABLE') || opts.signal.aborted) throw err;
    return dialRelay(fallback, opts);
  }
}

/** Default bound on one `connect` attempt. */
export const CONNECT_TIMEOUT_MS = 15_000;

/**
 * Looks `uuid` up and resolves to a socket spliced to the hidden server, after `+OK` (it
 * carries a default 'error' listener, so a reset never goes unhandled). Rejects
 * with a RendezvousError: NOT_REGISTERED, QUOTA_EXCEEDED (the hidden server's monthly quota is
 * spent: `retryAfter` is the seconds to the next UTC month; not retried), BUSY (its cap on live
 * rendezvous), RELAY_REFUSED (any other `-ERR`), UNREACHABLE, TIMEOUT or ABORTED.
 */
export async function connect(opts: ConnectOptions): Promise<Socket> {
  checkConnectOptions(opts);
  const timeoutMs = opts.timeoutMs ?? CONNECT_TIMEOUT_MS;
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout.signal]) : timeout.signal;
  try {
    const triple = await lookupWithApi(opts.api, opts.uuid, signal);
    const { socket, rid } = await dialNamedRelay(triple, { statusTimeoutMs: timeoutMs, signal });
    if (rid) ridOf.set(socket, rid);
    // A reset from the far side must not crash an application that added no 'error' listener
    // (its own listeners still see the error; 'close' reports hadError).
    socket.on('error', () => undefined);
    return socket;
  } catch (err) {
    if (timeout.signal.aborted && !opts.signal?.aborted && isRendezvousError(err, 'ABORTED')) {
      throw new RendezvousError('TIMEOUT', `no rendezvous within ${timeoutMs} ms`, { permanent: false });
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The URL that reaches hidden server `uuid` through a relay's HTTP-specific endpoint, for any
 * HTTP client: `fetch(rendezvousUrl('https://relay.example.com', 'my-web', '/status'))`.
 */
export function rendezvousUrl(relay: string, uuid: string, path = '/'): string {
  const url = new URL(path, relay);
  url.searchParams.set('rendezvous', uuid);
  return url.toString();
}

/**
 * The RendezvousError a relay's HTTP-specific answer stands for, for applications reaching a
 * hidden server with any HTTP client (`rendezvousUrl`): the relay's refusals carry
 * `{"error":{"diagnostic":…}}` — QUOTA_EXCEEDED for its `429 quota exceeded` (`retryAfter` from
 * `Retry-After`), BUSY for its cap on live rendezvous, NOT_REGISTERED for `404` (nothing parked),
 * else RELAY_REFUSED with the diagnostic. Undefined for a success and for an error without that
 * body (the hidden server's own errors, unless it answers in the same shape). Reads the body only
 * of an error status, from a clone: the response stays readable.
 */
export async function rendezvousErrorOf(res: Response): Promise<RendezvousError | undefined> {
  if (res.status < 400) return undefined;
  const body = errorBodyOf(await res.clone().text());
  if (!body) return undefined;
  const code: ErrorCode =
    res.status === 429 && /^quota exceeded\b/i.test(body.diagnostic)
      ? 'QUOTA_EXCEEDED'
      : /^too many live rendezvous\b/i.test(body.diagnostic)
        ? 'BUSY'
        : res.status === 404
          ? 'NOT_REGISTERED'
          : 'RELAY_REFUSED';
  const retryAfter = Number(res.headers.get('retry-after')) || undefined;
  return new RendezvousError(code, body.diagnostic, {
    permanent: body.permanent ?? (res.status < 500 && ![404, 408, 429].includes(res.status)),
    retryAfter,
  });
}
