/**
 * The HTTP-specific protocol across regions. A mobile request that reaches this region's relay
 * for a hidden server parked in another region (its park record, replicated through the global
 * table, names that region and its public HTTP URL) is answered `307 Temporary Redirect` to that
 * region's relay — never a 404 while the hidden server is online. 307 keeps the method and body.
 *
 * The redirect keeps naming the hidden server the way a client that follows it will still send:
 *   - named by Host (`<id>.<domain>`) or by credentials (Digest/Basic username): host-routed,
 *     `<scheme>://<id>.<host of RELAY_HTTP_PUBLIC_URL><path>?<query>` — clients do not resend
 *     credentials to another host, so the host carries the name;
 *   - named by `?rendezvous=<id>`: `<RELAY_HTTP_PUBLIC_URL origin><path>?<query>`, the query kept
 *     as it was (it still names the hidden server; no wildcard name needed).
 * A proxy-style absolute target (`GET http://host/path`) keeps only its path and query; a target
 * that is neither (`x:@evil.example/x`) is refused with 400 rather than pasted after an origin.
 */
import type { RequestHead } from '../core/http-head.js';
import { HttpError, hostedHiddenServer } from '../core/http-head.js';
import type { ParkRecord } from '../server/store/index.js';

/** How a mobile request named its hidden server. */
export type NamedBy = 'host' | 'query' | 'credentials';

/** Which of the request's parts named `id` (the order `namedHiddenServer` reads them in). */
export function namedBy(head: RequestHead, domain: string | undefined): NamedBy {
  if (domain && hostedHiddenServer(head, domain)) return 'host';
  const q = head.target.indexOf('?');
  if (q !== -1 && new URLSearchParams(head.target.slice(q + 1)).get('rendezvous')) return 'query';
  return 'credentials';
}

/** One DNS label: what host routing can carry. */
const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** A base no request can name: what a path is resolved against to read it, never sent anywhere. */
const PLACEHOLDER = 'http://path.invalid';

/**
 * The request's path and query, parsed and percent-encoded: an origin-form target (`/path?query`)
 * as it reads, an absolute-form one (`http://host/path?query`, a proxy's) reduced to them. Nothing
 * else is a path — `x:@evil.example/x` or `x:.evil.example/` pasted after an origin would name
 * another host, and `//host` or `/\host` would to a URL parser — so those are a 400.
 */
export function requestPath(target: string): string {
  let u: URL | undefined;
  try {
    if (target.startsWith('/')) u = new URL(target, PLACEHOLDER);
    else if (/^https?:\/\//i.test(target)) u = new URL(target);
  } catch {
    u = undefined;
  }
  if (!u || (target.startsWith('/') && u.origin !== PLACEHOLDER))
    throw new HttpError(400, 'request target must be a path (/path?query)');
  return `${u.pathname}${u.search}`;
}

/**
 * The `Location` that reaches `id` at the relay of `rec`'s region, or undefined without a usable
 * URL. Built from the record's origin and the request's parsed path and query only (throws
 * HttpError 400 for a target that is no path).
 */
export function redirectLocation(
  rec: Pick<ParkRecord, 'httpUrl'>,
  head: RequestHead,
  id: string,
  by: NamedBy,
): string | undefined {
  const rest = requestPath(head.target);
  let base: URL;
  try {
    base = new URL(rec.httpUrl ?? '');
  } catch {
    return undefined;
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') return undefined;
  if (by === 'query') return `${base.origin}${rest}`;
  if (DNS_LABEL.test(id)) return `${base.protocol}//${id.toLowerCase()}.${base.host}${rest}`;
  // An id that cannot be a host label (dots, colons) is named by the query instead.
  const u = new URL(`${base.origin}${rest}`);
  u.searchParams.set('rendezvous', id);
  return u.toString();
}

/** A complete `307` answer (with a short JSON body saying where the hidden server is). */
export function encodeRedirect(location: string, region: string | undefined): Buffer {
  const body = JSON.stringify({
    error: { permanent: false, diagnostic: `hidden server parked in region ${region ?? 'elsewhere'}` },
  });
  return Buffer.from(
    'HTTP/1.1 307 Temporary Redirect\r\n' +
      `Location: ${location}\r\n` +
      'Cache-Control: no-store\r\n' +
      'Content-Type: application/json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      `Connection: close\r\n\r\n${body}`,
    'latin1',
  );
}
