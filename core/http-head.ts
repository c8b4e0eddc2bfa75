/**
 * HTTP/1.x request heads for the HTTP-specific protocol: an incremental decoder with a hard
 * size limit (checked before buffering more), a strict parser, and the few writers the relay
 * needs. The relay never parses bodies: after the head it only splices bytes.
 *
 *   request-line CRLF *( field-name ":" OWS field-value OWS CRLF ) CRLF      ≤ MAX_HEAD bytes
 */
import { RendezvousError } from './errors.js';

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
// biome-ignore lint/suspicious/noControlCharactersInRegex: control bytes are what these reject
const FIELD = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*$/;

/** The first value of header `name` (case-insensitive). */
export function headerValue(head: RequestHead, name: string): string | undefined {
  const lower = name.toLowerCase();
  return head.headers.find(([k]) => k.toLowerCase() === lower)?.[1];
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
    const f = FIELD.exec(line);
    if (!f) throw new HttpError(400, 'malformed header field');
    headers.push([f[1] as string, f[2] as string]);
  }
  const head: RequestHead = {
    method: m[1] as string,
    target: m[2] as string,
    version: m[3] as string,
    headers,
  };
  const lengths = headers.filter(([k]) => k.toLowerCase() === 'content-length').map(([, v]) => v);
  const hasTe = headers.some(([k]) => k.toLowerCase() === 'transfer-encoding');
  // Request smuggling guards (RFC 9112 §6.3): both framings at once, or disagreeing lengths.
  if (hasTe && lengths.length > 0) throw new HttpError(400, 'Content-Length with Transfer-Encoding');
  if (lengths.some((v) => !/^[0-9]+$/.test(v)) || new Set(lengths).size > 1) {
    throw new HttpError(400, 'invalid Content-Length');
  }
  return head;
}

/**
 * Incremental head decoder: `push` returns the head's text (without the empty line) and the
 * bytes after it once the empty line arrives; throws HttpError(431) as soon as MAX_HEAD bytes
 * arrived without one.
 */
export class HeadDecoder {
  private buffered: Buffer = Buffer.alloc(0);

  constructor(private readonly limit = MAX_HEAD) {}

  push(chunk: Buffer): { text: string; rest: Buffer } | null {
    const from = Math.max(0, this.buffered.length - 3);
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    const end = this.buffered.indexOf('\r\n\r\n', from, 'latin1');
    if (end === -1 || end + 4 > this.limit) {
      if (this.buffered.length >= this.limit) throw new HttpError(431, 'request header fields too large');
      return null;
    }
    return { text: this.buffered.subarray(0, end).toString('latin1'), rest: this.buffered.subarray(end + 4) };
  }
}

/** Serialises a head for forwarding, leaving out the named headers (case-insensitive). */
export function serializeHead(head: RequestHead, drop: string[] = []): Buffer {
  const skip = new Set(drop.map((d) => d.toLowerCase()));
  const lines = [`${head.method} ${head.target} ${head.version}`];
  for (const [k, v] of head.headers) if (!skip.has(k.toLowerCase())) lines.push(`${k}: ${v}`);
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

/** The hidden server a mobile request names: `?rendezvous=ID`, Digest username, or Basic user. */
export function namedHiddenServer(head: RequestHead): string | undefined {
  const q = head.target.indexOf('?');
  if (q !== -1) {
    const id = new URLSearchParams(head.target.slice(q + 1)).get('rendezvous');
    if (id) return id;
  }
  const auth = headerValue(head, 'authorization');
  if (!auth) return undefined;
  const digest = /^Digest\s+(?:.*?[\s,])?username\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/i.exec(auth);
  if (digest) return (digest[1]?.replace(/\\(.)/g, '$1') ?? digest[2]) || undefined;
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(auth);
  if (basic) {
    const decoded = Buffer.from(basic[1] as string, 'base64').toString('utf8');
    const user = decoded.split(':')[0];
    return user || undefined;
  }
  return undefined;
}

/** A CONNECT target of the HTTP-specific protocol: `uuid:<ID>?response=<TOTP>` or `?cookie=<c>`. */
export interface ConnectTarget {
  uuid: string;
  response?: string;
  cookie?: string;
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
    const f = FIELD.exec(line);
    if (f) headers.push([f[1] as string, f[2] as string]);
  }
  return { status: Number(m[1]), headers };
}
