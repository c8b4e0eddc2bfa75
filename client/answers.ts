/**
 * What an HTTP answer means to a client: a registration API's answer (ours, or the original's
 * `200 {"error":…}`), a relay's answer to a CONNECT, or the answer of something that is neither
 * — the store's port, the relay's HTTP port, a wrong path, an HTML page — named in one line so
 * that a misconfigured URL stops at once instead of being retried forever.
 */
import { type ErrorCode, RendezvousError } from '../core/errors.js';

/** An HTTP answer as read: status, headers (lower-case names) and the body's text. */
export interface Answer {
  status: number;
  header(name: string): string | undefined;
  text: string;
}

/** The body of a rendezvous error answer, when it is one. */
interface ErrorBody {
  permanent?: boolean;
  diagnostic: string;
}

/** The JSON body, when it parses to an object. */
function jsonOf(text: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(text);
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** `{"error":{"diagnostic":"…"}}`, the one error shape of every rendezvous server (ours and the original's). */
export function errorBodyOf(text: string): ErrorBody | undefined {
  const e = jsonOf(text)?.error as { permanent?: unknown; diagnostic?: unknown } | undefined;
  if (!e || typeof e !== 'object' || typeof e.diagnostic !== 'string') return undefined;
  return { diagnostic: e.diagnostic, permanent: typeof e.permanent === 'boolean' ? e.permanent : undefined };
}

/** Printable text only, shortened: what a foreign server said may hold anything. */
function printable(text: string, max = 60): string {
  const flat = text.replace(/[^\x20-\x7e]+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}

/**
 * What answered, in words, when it is not a rendezvous server: the store (DynamoDB, dynalite),
 * API Gateway without this route, an HTML page (its title), or its status and first words.
 */
export function describeForeign(a: Answer): string {
  const body = a.text;
  if (a.header('x-amz-crc32') || /UnknownOperationException|healthy: dynamodb|"__type"/.test(body))
    return `a DynamoDB endpoint (the store's port?), HTTP ${a.status}`;
  if (a.header('x-amzn-requestid') || a.header('x-amz-apigw-id')) {
    const m = printable(String(jsonOf(body)?.message ?? body));
    return `an API Gateway endpoint without this route, HTTP ${a.status} "${m}" (check the path and stage)`;
  }
  const type = a.header('content-type') ?? '';
  if (/html/i.test(type) || /^\s*</.test(body)) {
    const title = /<title[^>]*>([^<]*)<\/title>/i.exec(body)?.[1];
    return `an HTML page${title ? ` titled "${printable(title)}"` : ''}, HTTP ${a.status}`;
  }
  return `HTTP ${a.status}${type ? ` ${printable(type, 40)}` : ''}: "${printable(body) || '(empty)'}"`;
}

/** True for answers a proxy in front of a server gives while it is down or busy: retried, not a verdict. */
function transientStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408;
}

/** The error code a rendezvous error answer stands for. */
function codeOf(status: number, diagnostic: string, method: 'GET' | 'PUT' | 'CONNECT'): ErrorCode {
  if (/identity disabled/i.test(diagnostic)) return 'IDENTITY_DISABLED';
  if (/code length not accepted/i.test(diagnostic)) return 'CODE_LENGTH_REFUSED';
  // The relay's 429 for an identity whose monthly quota is spent (issue 30), and its concurrency cap.
  if (status === 429 && /^quota exceeded\b/i.test(diagnostic)) return 'QUOTA_EXCEEDED';
  if (/^too many live rendezvous\b/i.test(diagnostic)) return 'BUSY';
  // The original answers errors as 200 {"error":…}: "invalid request" is a refused code on a PUT.
  if (status === 200 || status === 0) {
    if (/not registered/i.test(diagnostic)) return 'NOT_REGISTERED';
    return method === 'GET' ? 'BAD_REQUEST' : 'AUTH_FAILED';
  }
  if (status === 401) return 'AUTH_FAILED';
  if (status === 404) return 'NOT_REGISTERED';
  if (status === 429) return 'TOO_MANY_ATTEMPTS';
  if (status === 400 || status === 403 || status === 407 || status === 409) return 'BAD_REQUEST';
  return 'UNREACHABLE';
}

/**
 * The error an answer other than success stands for. `what` names the server in the message
 * (`http://host:8000 is not a rendezvous registration API: …`); `kind` is what it should have
 * been. A foreign answer, or a rendezvous server reached at the wrong place (a wrong path; the
 * relay's HTTP port as the API), is a PROTOCOL error, permanent: the URL is wrong.
 */
export function errorOfAnswer(a: Answer, method: 'GET' | 'PUT' | 'CONNECT', what: string): RendezvousError {
  const kind = method === 'CONNECT' ? 'a rendezvous HTTP relay' : 'a rendezvous registration API';
  const wrong = (how: string) =>
    new RendezvousError('PROTOCOL', `${what} is not ${kind}: it answered as ${how}`, { permanent: true });
  const body = errorBodyOf(a.text);
  const retryAfter = Number(a.header('retry-after')) || undefined;
  if (!body) {
    if (transientStatus(a.status))
      return new RendezvousError(a.status === 429 ? 'TOO_MANY_ATTEMPTS' : 'UNREACHABLE', `HTTP ${a.status}`, {
        permanent: false,
        retryAfter,
      });
    return wrong(describeForeign(a));
  }
  if (method !== 'CONNECT') {
    if (
      /name the hidden server/.test(body.diagnostic) ||
      /realm="rendezvous"/.test(a.header('www-authenticate') ?? '')
    )
      return wrong(
        "the relay's HTTP-specific port (use the registration API's URL, or --protocol http with --relay)",
      );
    if (a.status === 404 && /no such resource/.test(body.diagnostic))
      return wrong('a rendezvous server saying "no such resource" (HTTP 404): check the path of the URL');
  }
  return new RendezvousError(codeOf(a.status, body.diagnostic, method), body.diagnostic, {
    permanent: body.permanent ?? a.status < 500,
    retryAfter,
  });
}

/**
 * How a refused credential reads, for the agent's bookkeeping: `disabled` and `length` are
 * verdicts the server tells only to a right secret; `replay` ("code used already") is no
 * verdict; `malformed` is a server that does not take the value's shape (an older one, for a
 * proof); `nack` a refusal in the original's manner (`permanent: false`), which does not know
 * proofs either; `auth` our server's refusal (wrong secret or unknown uuid, or a replay).
 */
export type Refusal = 'disabled' | 'length' | 'replay' | 'malformed' | 'nack' | 'auth';

/** The refusal an error from a PUT or a CONNECT is, or undefined when it is not about the credential. */
export function refusalOf(err: RendezvousError): Refusal | undefined {
  if (err.code === 'IDENTITY_DISABLED') return 'disabled';
  if (err.code === 'CODE_LENGTH_REFUSED') return 'length';
  // "code used already", "proof already used for this step": told only to a right credential.
  if (/used already|already used/i.test(err.message)) return 'replay';
  if (err.code === 'BAD_REQUEST' && /\bresponse\b/.test(err.message)) return 'malformed';
  if (err.code === 'AUTH_FAILED') return err.permanent ? 'auth' : 'nack';
  return undefined;
}
