/**
 * The browser-origin rules of host-based routing (`RELAY_HTTP_DOMAIN`). Each hidden server is its
 * own origin, `<id>.<domain>`, only if no tenant can reach the others through cookies:
 *   - an answer may set cookies for the host it was asked for only: a `Domain` attribute naming
 *     that host is removed (the cookie stays host-only, which is the same host), and a cookie whose
 *     `Domain` names anything else — the parent domain, another tenant — is dropped;
 *   - the parent name, and any other name under it that names no tenant, serves no tenant (a page
 *     served there could set cookies for the whole domain), unless the operator turns the shared
 *     origin on (`RELAY_HTTP_SHARED_ORIGIN`, unsafe for browsers).
 */
import { headerValue, type RequestHead } from '../core/http-head.js';

/** The request's host name: the Host header without its port or trailing dot, lowercased ('' without one). */
export function requestHost(head: RequestHead): string {
  let host = (headerValue(head, 'host') ?? '').trim().toLowerCase();
  const colon = host.lastIndexOf(':');
  if (colon !== -1 && !host.endsWith(']') && /^[0-9]*$/.test(host.slice(colon + 1)))
    host = host.slice(0, colon);
  return host.endsWith('.') ? host.slice(0, -1) : host;
}

/** True when `host` is `domain` itself or a name under it. */
export function inDomain(host: string, domain: string): boolean {
  const d = domain.toLowerCase().replace(/\.$/, '');
  return host === d || host.endsWith(`.${d}`);
}

/** A header line `Set-Cookie: …` (the name as browsers match it: case-insensitive, blanks before the colon). */
const SET_COOKIE = /^set-cookie[ \t]*:/i;

/**
 * One `Set-Cookie` field value restricted to `host`: without its `Domain` attributes when each
 * names `host` (or is empty, which browsers ignore), undefined (drop the cookie) when one names
 * anything else.
 */
export function cookieForHost(value: string, host: string): string | undefined {
  const parts = value.split(';');
  const kept = [parts[0] as string];
  for (const attr of parts.slice(1)) {
    const eq = attr.indexOf('=');
    const name = (eq === -1 ? attr : attr.slice(0, eq)).trim().toLowerCase();
    if (name !== 'domain') {
      kept.push(attr);
      continue;
    }
    const domain = (eq === -1 ? '' : attr.slice(eq + 1)).trim().toLowerCase().replace(/^\./, '');
    if (domain !== '' && domain !== host) return undefined;
  }
  return kept.join(';');
}

/**
 * Rewrites the header lines of an answer's head (status line first) so that every cookie it sets
 * is for `host` only. Returns undefined when a line break is not CRLF (a browser would split
 * there and could read a `Set-Cookie` this pass never saw): such a head is not forwarded.
 */
export function headForHost(lines: string[], host: string): string[] | undefined {
  const out: string[] = [];
  for (const line of lines) {
    if (/[\r\n\0]/.test(line)) return undefined;
    if (!SET_COOKIE.test(line)) {
      out.push(line);
      continue;
    }
    const value = line.slice(line.indexOf(':') + 1).trim();
    const cookie = cookieForHost(value, host);
    if (cookie !== undefined) out.push(`Set-Cookie: ${cookie.trim()}`);
  }
  return out;
}
