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
 * A proxy-style absolute target (`GET http://host/path`) keeps only its path and query.
 */
import type { RequestHead } from '../core/http-head.js';
import { hostedHiddenServer } from '../core/http-head.js';
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

/** The request's path and query (origin-form as is; absolute-form reduced to them). */
function pathAndQuery(target: string): string {
  if (target.startsWith('/')) return target;
  try {
    const u = new URL(target);
    return `${u.pathname}${u.search}`;
  } catch {
    return '/';
  }
}

/** The `Location` that reaches `id` at the relay of `rec`'s region, or undefined without a usable URL. */
export function redirectLocation(
  rec: Pick<ParkRecord, 'httpUrl'>,
  head: RequestHead,
  id: string,
  by: NamedBy,
): string | undefined {
  let base: URL;
  try {
    base = new URL(rec.httpUrl ?? '');
  } catch {
    return undefined;
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') return undefined;
  const rest = pathAndQuery(head.target);
  if (by === 'query') return `${base.origin}${rest}`;
  if (DNS_LABEL.test(id)) return `${base.protocol}//${id.toLowerCase()}.${base.host}${rest}`;
  // An id that cannot be a host label (dots, colons) is named by the query instead.
  const u = new URL(rest, base.origin);
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
