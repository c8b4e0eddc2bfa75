/**
 * HTTP/1.x heads for the HTTP-specific protocol, both sides of it: an incremental decoder with a
 * hard size limit (checked before buffering more), a strict parser, the few writers the relay
 * needs, the agent's parking CONNECT (`encodeConnect`) and the `Rendezvous-*` header names. The
 * relay never parses bodies: after the head it only splices bytes.
 *
 *   request-line CRLF *( field-name ":" OWS field-value OWS CRLF ) CRLF      ≤ MAX_HEAD bytes
 */
import { RendezvousError } from './errors.js';
import type { TargetState } from './relay-line.js';

/** Header of a CONNECT's 200 carrying the cookie later CONNECTs may use instead of a code. */
export const COOKIE_HEADER = 'Rendezvous-Cookie';
/** Header the relay adds to the request head it forwards to the hidden server: the rendezvous's rid. */
export const RID_HEADER = 'Rendezvous-Id';
/** Header of a CONNECT by which an agent reports its target `up` or `down` (optional). */
export const TARGET_HEADER = 'Rendezvous-Target';

/** Largest request head accepted (431 past it). */
export const MAX_HEAD = 16 * 1024;

/** An HTTP error the relay answers with `status` and closes. */
export class HttpError extends RendezvousError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(status === 431 ? 'LINE_TOO_LONG' : 'BAD_REQUEST', message);
    this.name = 'HttpError';
  }
}

/** A parsed request head. */
export interface RequestHead {
  method: string;
  target: string;
  version: string;
  /** Header fields in order, names as sent. */
  headers: Array<[string, string]>;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: control bytes are what these reject
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^\s\x00-\x1f\x7f]+) (HTTP\/1\.[01])$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control bytes are what this rejects
const BAD_VALUE_BYTE = /[\x00-\x08\x0a-\x1f\x7f]/;

/** The first value of header `name` (case-insensitive). */
export function headerValue(head: { headers: Array<[string, string]> }, name: string): string | undefined {
  const lower = name.toLowerCase();
  return head.headers.find(([k]) => k.toLowerCase() === lower)?.[1];
}

const isOws = (c: number) => c === 0x20 || c === 0x09;

/**
 * Splits `name: value` with the value's surrounding blanks trimmed, or undefined when malformed.
 * No pattern here can backtrack: each step is one pass over the line (linear in its length).
 */
function parseField(line: string): [string, string] | undefined {
  const colon = line.indexOf(':');
  if (colon <= 0) return undefined;
  const name = line.slice(0, colon);
  if (!TOKEN.test(name)) return undefined;
  let from = colon + 1;
  let to = line.length;
  while (from < to && isOws(line.charCodeAt(from))) from++;
  while (to > from && isOws(line.charCodeAt(to - 1))) to--;
  const value = line.slice(from, to);
  if (BAD_VALUE_BYTE.test(value)) return undefined;
  return [name, value];
}

/** Parses the bytes of a head (without the final empty line). Throws HttpError(400). */
export function parseRequestHead(text: string): RequestHead {
  const lines = text.split('\r\n');
  const m = REQUEST_LINE.exec(lines[0] ?? '');
  if (!m) throw new HttpError(400, 'malformed request line');
  const headers: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    if (line === '') continue;
    if (line[0] === ' ' || line[0] === '\t') throw new HttpError(400, 'obsolete header folding');
    const f = parseField(line);
    if (!f) throw new HttpError(400, 'malformed header field');
    headers.push(f);
  }
  const head: RequestHead = {
    method: m[1] as string,
    target: m[2] as string,
    version: m[3] as string,
    headers,
  };
  const lengths = headers.filter(([k]) => k.toLowerCase() === 'content-length').map(([, v]) => v);
  const te = headers.filter(([k]) => k.toLowerCase() === 'transfer-encoding').map(([, v]) => v);
  // Request smuggling guards (RFC 9112 §6.3): both framings at once, or disagreeing lengths.
  if (te.length > 0 && lengths.length > 0) throw new HttpError(400, 'Content-Length with Transfer-Encoding');
  if (lengths.some((v) => !/^[0-9]{1,15}$/.test(v)) || new Set(lengths).size > 1) {
    throw new HttpError(400, 'invalid Content-Length');
  }
  // A request body whose last coding is not chunked has no knowable end (RFC 9112 §6.3, point 4).
  if (te.length > 0 && te.join(',').split(',').pop()?.trim().toLowerCase() !== 'chunked') {
    throw new HttpError(400, 'unsupported Transfer-Encoding');
  }
  return head;
}

/**
 * Incremental head decoder: `push` returns the head's text (without the empty line) and the
 * bytes after it once the empty line arrives; throws HttpError(431) as soon as MAX_HEAD bytes
 * arrived without one.
 */
export class HeadDecoder {
  private readonly chunks: Buffer[] = [];
  private length = 0;
  /** The last up-to-3 bytes seen, so an empty line split across chunks is still found. */
  private tail: Buffer = Buffer.alloc(0);

  constructor(private readonly limit = MAX_HEAD) {}

  push(chunk: Buffer): { text: string; rest: Buffer } | null {
    // Search only the new bytes (plus the previous tail): linear however the head is chunked.
    const window = this.tail.length ? Buffer.concat([this.tail, chunk]) : chunk;
    const at = window.indexOf('\r\n\r\n', 0, 'latin1');
    if (at === -1) {
      if (this.length + chunk.length >= this.limit)
        throw new HttpError(431, 'request header fields too large');
      this.chunks.push(chunk);
      this.length += chunk.length;
      this.tail = window.subarray(Math.max(0, window.length - 3));
      return null;
    }
    const end = this.length - this.tail.length + at;
    if (end + 4 > this.limit) throw new HttpError(431, 'request header fields too large');
    this.chunks.push(chunk);
    const all = Buffer.concat(this.chunks, this.length + chunk.length);
    return { text: all.subarray(0, end).toString('latin1'), rest: all.subarray(end + 4) };
  }
}

/** Serialises a head for forwarding, leaving out the named headers (case-insensitive) and appending `add`. */
export function serializeHead(
  head: RequestHead,
  drop: string[] = [],
  add: Array<[string, string]> = [],
): Buffer {
  const skip = new Set(drop.map((d) => d.toLowerCase()));
  const lines = [`${head.method} ${head.target} ${head.version}`];
  for (const [k, v] of head.headers) if (!skip.has(k.toLowerCase())) lines.push(`${k}: ${v}`);
  for (const [k, v] of add) lines.push(`${k}: ${v}`);
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
}

const REASONS: Record<number, string> = {
  200: 'OK',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  407: 'Proxy Authentication Required',
  408: 'Request Timeout',
  409: 'Conflict',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
};

/** A complete response: status line, headers, and an optional JSON error body. */
export function encodeResponse(
  status: number,
  headers: Record<string, string> = {},
  error?: { permanent: boolean; diagnostic: string },
): Buffer {
  const body = error ? JSON.stringify({ error }) : '';
  const all: Record<string, string> = { ...headers };
  if (error) {
    all['Content-Type'] = 'application/json';
    all['Content-Length'] = String(Buffer.byteLength(body));
    all.Connection = 'close';
  }
  const lines = [`HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}`];
  for (const [k, v] of Object.entries(all)) lines.push(`${k}: ${v}`);
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`, 'latin1');
}

/**
 * The hidden server a request's Host names under `domain` (`<id>.<domain>`, any port, the domain
 * matched case-insensitively, a trailing dot allowed), or undefined.
 */
export function hostedHiddenServer(head: RequestHead, domain: string): string | undefined {
  let host = headerValue(head, 'host');
  if (!host) return undefined;
  const colon = host.lastIndexOf(':');
  if (colon !== -1 && /^[0-9]{1,5}$/.test(host.slice(colon + 1))) host = host.slice(0, colon);
  if (host.endsWith('.')) host = host.slice(0, -1);
  const suffix = `.${domain.toLowerCase().replace(/\.$/, '')}`;
  if (host.length <= suffix.length || !host.toLowerCase().endsWith(suffix)) return undefined;
  const label = host.slice(0, host.length - suffix.length);
  // One label only: a.b.<domain> names nobody (a wildcard certificate covers one level).
  return label.includes('.') ? undefined : label;
}

/**
 * The hidden server a mobile request names: its Host under `domain` (when the relay has one),
 * else `?rendezvous=ID`, a Digest username, or a Basic user.
 */
export function namedHiddenServer(head: RequestHead, domain?: string): string | undefined {
  if (domain) {
    const hosted = hostedHiddenServer(head, domain);
    if (hosted) return hosted;
  }
  const q = head.target.indexOf('?');
  if (q !== -1) {
    const id = new URLSearchParams(head.target.slice(q + 1)).get('rendezvous');
    if (id) return id;
  }
  const auth = headerValue(head, 'authorization');
  if (!auth) return undefined;
  if (/^Digest\s/i.test(auth)) return authParam(auth.slice(7), 'username') || undefined;
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(auth);
  if (basic) {
    const decoded = Buffer.from(basic[1] as string, 'base64').toString('utf8');
    const user = decoded.split(':')[0];
    return user || undefined;
  }
  return undefined;
}

const isTokenChar = (c: string) => TOKEN.test(c);

/**
 * One parameter of an auth-param list (`a=b, c="d \"e\""`), in one left-to-right pass: a name
 * inside a quoted value is never mistaken for a parameter, and no input makes it backtrack.
 */
function authParam(params: string, wanted: string): string | undefined {
  let i = 0;
  const n = params.length;
  while (i < n) {
    while (i < n && (params[i] === ',' || isOws(params.charCodeAt(i)))) i++;
    const nameStart = i;
    while (i < n && isTokenChar(params[i] as string)) i++;
    const name = params.slice(nameStart, i);
    while (i < n && isOws(params.charCodeAt(i))) i++;
    if (!name || params[i] !== '=') return undefined;
    i++;
    while (i < n && isOws(params.charCodeAt(i))) i++;
    let value = '';
    if (params[i] === '"') {
      i++;
      let closed = false;
      while (i < n) {
        const c = params[i] as string;
        if (c === '\\' && i + 1 < n) {
          value += params[i + 1];
          i += 2;
        } else if (c === '"') {
          closed = true;
          i++;
          break;
        } else {
          value += c;
          i++;
        }
      }
      if (!closed) return undefined;
    } else {
      const from = i;
      while (i < n && params[i] !== ',' && !isOws(params.charCodeAt(i))) i++;
      value = params.slice(from, i);
    }
    if (name.toLowerCase() === wanted) return value;
  }
  return undefined;
}

/**
 * Finds where a request's body ends, incrementally, so the relay forwards exactly one request:
 * `push` returns how many bytes of the chunk still belong to the body; once `done`, every
 * further byte is the start of another request. Framing per RFC 9112 §6: chunked, else
 * Content-Length, else no body.
 */
export class RequestBodyFramer {
  private left: number;
  private state: 'length' | 'size' | 'data' | 'data-crlf' | 'trailer' | 'done';
  private line = 0;
  private sizeText = '';
  private sawNewline = false;

  /** A request's framing from its head, or an explicit one (a response's, read by the relay). */
  constructor(framing: RequestHead | { chunked: boolean; length: number }) {
    const chunked =
      'headers' in framing ? headerValue(framing, 'transfer-encoding') !== undefined : framing.chunked;
    const length =
      'headers' in framing ? Number(headerValue(framing, 'content-length') ?? '0') : framing.length;
    this.left = chunked ? 0 : length;
    this.state = chunked ? 'size' : length > 0 ? 'length' : 'done';
  }

  /** True once the whole body has passed. */
  get done(): boolean {
    return this.state === 'done';
  }

  /** Consumes body bytes from `chunk`; returns how many of them were body. */
  push(chunk: Buffer): number {
    let i = 0;
    while (i < chunk.length && this.state !== 'done') {
      if (this.state === 'length' || this.state === 'data') {
        const take = Math.min(this.left, chunk.length - i);
        i += take;
        this.left -= take;
        if (this.left === 0) this.state = this.state === 'length' ? 'done' : 'data-crlf';
        continue;
      }
      const c = chunk[i++] as number;
      if (this.state === 'data-crlf') {
        if (c === 0x0a) this.state = 'size';
        continue;
      }
      // 'size' and 'trailer' read lines; a line past the cap ends the body (the rest is refused).
      if (++this.line > MAX_HEAD) {
        this.state = 'done';
        break;
      }
      if (c !== 0x0a) {
        if (this.state === 'size' && this.sizeText.length < 17 && c !== 0x0d)
          this.sizeText += String.fromCharCode(c);
        else if (this.state === 'trailer' && c !== 0x0d) this.sawNewline = false;
        continue;
      }
      this.line = 0;
      if (this.state === 'size') {
        const size = Number.parseInt(this.sizeText.split(';')[0]?.trim() || 'x', 16);
        this.sizeText = '';
        if (!Number.isFinite(size)) {
          this.state = 'done';
        } else if (size === 0) {
          this.state = 'trailer';
          this.sawNewline = true;
        } else {
          this.left = size;
          this.state = 'data';
        }
      } else if (this.sawNewline) {
        // An empty line ends the trailer section, and with it the body.
        this.state = 'done';
      } else {
        this.sawNewline = true;
      }
    }
    return i;
  }
}

/** A CONNECT target of the HTTP-specific protocol: `uuid:<ID>?response=<TOTP>` or `?cookie=<c>`. */
export interface ConnectTarget {
  uuid: string;
  response?: string;
  cookie?: string;
}

/** What an agent's parking CONNECT says: whom it parks for, its credential, and optional news. */
export interface ConnectRequest extends ConnectTarget {
  /** The Host header: the relay's `host[:port]` as the agent addresses it. */
  host: string;
  /** The agent's knowledge of its target, sent as `Rendezvous-Target` (what operators see). */
  target?: TargetState;
}

/**
 * The parking CONNECT's head: `CONNECT uuid:<ID>?response=<TOTP> HTTP/1.1` (or `?cookie=<c>`,
 * which wins when both are given), `Host`, and `Rendezvous-Target` when the target is known.
 *
 *   CONNECT uuid:<pct-uuid>?(cookie=<pct-cookie>|response=<pct-code>) HTTP/1.1 CRLF
 *   Host: <host> CRLF [Rendezvous-Target: up|down CRLF] CRLF
 */
export function encodeConnect(req: ConnectRequest): Buffer {
  const cred =
    req.cookie !== undefined
      ? `cookie=${encodeURIComponent(req.cookie)}`
      : `response=${encodeURIComponent(req.response ?? '')}`;
  const target = req.target ? `${TARGET_HEADER}: ${req.target}\r\n` : '';
  return Buffer.from(
    `CONNECT uuid:${encodeURIComponent(req.uuid)}?${cred} HTTP/1.1\r\nHost: ${req.host}\r\n${target}\r\n`,
    'utf8',
  );
}

/** A `Rendezvous-Id` line inside a head's text (the header name matched case-insensitively). */
const FORWARDED_RID = new RegExp(`\\r\\n${RID_HEADER}:[ \\t]*([A-Za-z0-9_-]{1,32})[ \\t]*(?:\\r\\n|$)`, 'i');

/**
 * The rendezvous's rid from the first bytes of the request head the relay forwarded to a hidden
 * server (`Rendezvous-Id`), if those bytes carry it; looks at most at the head's first 8 KiB.
 */
export function forwardedRid(bytes: Buffer): string | undefined {
  const end = bytes.indexOf('\r\n\r\n');
  const head = bytes.subarray(0, end === -1 ? Math.min(bytes.length, 8192) : end).toString('latin1');
  return FORWARDED_RID.exec(head)?.[1];
}

/** Parses a CONNECT target; 403 when the scheme is not `uuid:`, 407 without a credential. */
export function parseConnectTarget(target: string): ConnectTarget {
  if (!target.startsWith('uuid:')) throw new HttpError(403, 'CONNECT target must be uuid:<ID>');
  const rest = target.slice(5);
  const q = rest.indexOf('?');
  let uuid: string;
  try {
    uuid = decodeURIComponent(q === -1 ? rest : rest.slice(0, q));
  } catch {
    throw new HttpError(400, 'malformed uuid');
  }
  const params = new URLSearchParams(q === -1 ? '' : rest.slice(q + 1));
  const response = params.get('response') ?? undefined;
  const cookie = params.get('cookie') ?? undefined;
  if (!uuid) throw new HttpError(400, 'missing uuid');
  if (!response && !cookie) throw new HttpError(407, 'missing response');
  return { uuid, response, cookie };
}

/** A parsed response head (what the agent reads after its CONNECT). */
export interface ResponseHead {
  status: number;
  headers: Array<[string, string]>;
}

/** Parses a response head's text. */
export function parseResponseHead(text: string): ResponseHead {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] ([0-9]{3})(?: .*)?$/.exec(lines[0] ?? '');
  if (!m) throw new HttpError(400, 'malformed status line');
  const headers: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    const f = parseField(line);
    if (f) headers.push(f);
  }
  return { status: Number(m[1]), headers };
}
