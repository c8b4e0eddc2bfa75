/**
 * The generic protocol's relay line format, the one module that knows its bytes.
 *
 *   client → relay   "R" cookie [SP options] "\n"   hidden server parks   (≤ MAX_COOKIE_LINE bytes)
 *   client → relay   "I" cookie [SP options] "\n"   mobile client pairs   (≤ MAX_COOKIE_LINE bytes)
 *   relay  → client  "+OK\n"                        paired: bytes flow from here on
 *   relay  → client  "+OK rid=" rid "\n"            the same, to a client that asked with `rid`
 *   relay  → client  "+OK direct=" host ":" port "\n"   to a hidden server that asked with `direct`
 *   relay  → client  "-ERR " text "\n"              refused; the relay closes after it
 *
 * Options are opt-in (original clients send none and get exactly "+OK\n"): words separated by one
 * space, each `name` or `name=value` (RELAY_OPTION). Known: `rid` (answer with the rendezvous's
 * correlation id) and, on R lines only, `target=up|down` (the agent's last knowledge of its
 * target) and `direct` (the relay's direct address, where mobile clients reach it without the
 * front: `+OK [rid=<rid> ]direct=<host:port>`, the host an IPv4 address, a name, or an IPv6 literal
 * in brackets; not said by a relay that has none). Unknown options of that shape are ignored, so
 * clients may add new ones; anything else is a malformed line.
 *
 * A "\r" before the "\n" is tolerated (telnet, `nc -C`). Decoding is incremental and checks the
 * limit before buffering more, so an endless line costs at most MAX_COOKIE_LINE bytes.
 */
import { RendezvousError } from './errors.js';

/** Longest accepted cookie line, newline included. */
export const MAX_COOKIE_LINE = 192;
/** Longest status line a client accepts from a relay, newline included. */
export const MAX_STATUS_LINE = 512;

/** Who sent a cookie line: `R` is the hidden server, `I` the mobile client. */
export type CookieRole = 'hidden' | 'mobile';

/** What an agent reports about its target when it parks (`target=up|down`, HTTP `Rendezvous-Target`). */
export type TargetState = 'up' | 'down';

/** A decoded cookie line. */
export interface CookieLine {
  role: CookieRole;
  /** The cookie without its role prefix. */
  cookie: string;
  /** `rid` was asked: answer `+OK rid=<rid>`. Absent when not asked. */
  rid?: true;
  /** R only: what the agent last knew of its target. Absent when not said. */
  target?: 'up' | 'down';
  /** R only: `direct` was asked — answer with the relay's direct address, when it has one. */
  direct?: true;
}

/** The shape of one cookie-line option (`name` or `name=value`); others make the line malformed. */
export const RELAY_OPTION = /^[a-z][a-z0-9-]*(=[A-Za-z0-9._-]{1,32})?$/;

/** The status indicator a relay sends on pairing. */
export const OK_LINE = Buffer.from('+OK\n', 'latin1');

const COOKIE_BODY = /^[A-Za-z0-9_-]{1,120}$/;

/**
 * A direct address as `+OK direct=` carries it: `host:port`, the host a name or an IPv4 address
 * (letters, digits, `.`, `-`) or an IPv6 literal in brackets. At most 64 characters, so a status
 * line with `rid` too stays far below MAX_STATUS_LINE.
 */
export const DIRECT_ADDRESS = /^(?:[A-Za-z0-9.-]{1,56}|\[[0-9A-Fa-f:.]{2,45}\]):[0-9]{1,5}$/;

/**
 * `+OK\n`; `+OK rid=<rid>\n` for a client that asked for the correlation id; `direct=<host:port>`
 * appended for a hidden server that asked for it (the caller passes `direct` only then).
 */
export function encodeOkLine(rid?: string, direct?: string): Buffer {
  if (direct === undefined) return rid === undefined ? OK_LINE : Buffer.from(`+OK rid=${rid}\n`, 'latin1');
  return Buffer.from(
    rid === undefined ? `+OK direct=${direct}\n` : `+OK rid=${rid} direct=${direct}\n`,
    'latin1',
  );
}

/**
 * The direct address a `+OK` line names (`direct=<host:port>`), as host and port (brackets of an
 * IPv6 literal removed); undefined when the line names none or a malformed one.
 */
export function directOfOkLine(statusText: string): { host: string; port: number } | undefined {
  const token = statusText.split(' ').find((t) => t.startsWith('direct='));
  const address = token?.slice('direct='.length);
  if (!address || !DIRECT_ADDRESS.test(address)) return undefined;
  const colon = address.lastIndexOf(':');
  const port = Number(address.slice(colon + 1));
  if (port < 1 || port > 65535) return undefined;
  return { host: address.slice(0, colon).replace(/^\[(.*)\]$/, '$1'), port };
}

/** `-ERR <diagnostic>\n`, with the diagnostic forced onto one printable line. */
export function encodeErrorLine(diagnostic: string): Buffer {
  const clean = diagnostic.replace(/[^\x20-\x7e]+/g, ' ').slice(0, MAX_STATUS_LINE - 7);
  return Buffer.from(`-ERR ${clean}\n`, 'latin1');
}

/** `R<c>\n` or `I<c>\n`, with options (`R<c> rid target=up\n`) when given. */
export function encodeCookieLine(prefixedCookie: string, options: string[] = []): Buffer {
  const opts = options.length > 0 ? ` ${options.join(' ')}` : '';
  return Buffer.from(`${prefixedCookie}${opts}\n`, 'latin1');
}

const malformed = () => new RendezvousError('MALFORMED_LINE', 'malformed cookie line');

/** Parses the text of a cookie line (without its newline). */
export function parseCookieLine(text: string): CookieLine {
  const role = text[0] === 'R' ? 'hidden' : text[0] === 'I' ? 'mobile' : undefined;
  const space = text.indexOf(' ');
  const cookie = space === -1 ? text.slice(1) : text.slice(1, space);
  if (role === undefined || !COOKIE_BODY.test(cookie)) throw malformed();
  const line: CookieLine = { role, cookie };
  if (space === -1) return line;
  for (const option of text.slice(space + 1).split(' ')) {
    // Empty words (two spaces, a trailing space) are malformed too: one space between options.
    if (!RELAY_OPTION.test(option)) throw malformed();
    if (option === 'rid') line.rid = true;
    else if (option === 'direct') {
      if (role === 'hidden') line.direct = true;
    } else if (option === 'target=up' || option === 'target=down') {
      // Only a hidden server's agent knows its target; on an I line the option means nothing.
      if (role === 'hidden') line.target = option === 'target=up' ? 'up' : 'down';
    } else if (option.startsWith('target=') || option === 'target') throw malformed();
  }
  return line;
}

/** A status line from the relay: `+OK…` or `-ERR …`. */
export type StatusLine = { ok: true; text: string } | { ok: false; diagnostic: string };

/** Parses a relay status line (without its newline). */
export function parseStatusLine(text: string): StatusLine {
  if (text.startsWith('+OK')) return { ok: true, text };
  if (text.startsWith('-ERR')) return { ok: false, diagnostic: text.slice(4).trim() || 'error' };
  throw new RendezvousError('PROTOCOL', 'malformed status line from relay');
}

/**
 * Incremental decoder for one newline-terminated line. `push` returns the line and whatever
 * bytes followed it once the newline arrives; it throws LINE_TOO_LONG as soon as `limit` bytes
 * arrived without one, before anything more is buffered.
 */
export class LineDecoder {
  private readonly chunks: Buffer[] = [];
  private length = 0;

  constructor(private readonly limit: number) {}

  /** Feeds bytes; returns the line (without "\n" and an optional "\r") and the rest, or null. */
  push(chunk: Buffer): { line: string; rest: Buffer } | null {
    const nl = chunk.indexOf(0x0a);
    if (nl === -1) {
      if (this.length + chunk.length >= this.limit) {
        throw new RendezvousError('LINE_TOO_LONG', 'line too long');
      }
      this.chunks.push(chunk);
      this.length += chunk.length;
      return null;
    }
    if (this.length + nl + 1 > this.limit) {
      throw new RendezvousError('LINE_TOO_LONG', 'line too long');
    }
    this.chunks.push(chunk.subarray(0, nl));
    let bytes = Buffer.concat(this.chunks);
    if (bytes.length > 0 && bytes[bytes.length - 1] === 0x0d) bytes = bytes.subarray(0, -1);
    this.chunks.length = 0;
    this.length = 0;
    return { line: bytes.toString('latin1'), rest: chunk.subarray(nl + 1) };
  }
}
