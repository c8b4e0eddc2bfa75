/** The registration API as a client sees it: PUT to register, GET to look up. */
import { type ErrorCode, RendezvousError } from '../core/errors.js';
import type { RendezvousTriple } from '../core/triple.js';

/** Request timeout for API calls. */
export const API_TIMEOUT_MS = 10_000;

async function call(
  api: string,
  method: 'GET' | 'PUT',
  params: Record<string, string>,
  signal?: AbortSignal,
): Promise<RendezvousTriple> {
  const url = new URL(api);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const timeout = AbortSignal.timeout(API_TIMEOUT_MS);
  let res: Response;
  try {
    res = await fetch(url, { method, signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
  } catch (err) {
    if (signal?.aborted) throw new RendezvousError('ABORTED', 'aborted', { cause: err });
    throw new RendezvousError('UNREACHABLE', `registration API unreachable: ${api}`, {
      permanent: false,
      cause: err,
    });
  }
  const text = await res.text();
  let body: { result?: RendezvousTriple; error?: { permanent?: boolean; diagnostic?: string } };
  try {
    body = JSON.parse(text);
  } catch {
    body = {};
  }
  if (res.ok && body.result && typeof body.result.cookie === 'string' && !body.error) return body.result;
  const diagnostic = body.error?.diagnostic ?? `HTTP ${res.status}`;
  const retryAfter = Number(res.headers.get('retry-after')) || undefined;
  const code =
    res.ok && body.error
      ? originalErrorCode(method, diagnostic)
      : res.status === 401
        ? 'AUTH_FAILED'
        : res.status === 404
          ? 'NOT_REGISTERED'
          : res.status === 429
            ? 'TOO_MANY_ATTEMPTS'
            : res.status === 400
              ? 'BAD_REQUEST'
              : 'UNREACHABLE';
  throw new RendezvousError(code, diagnostic, {
    permanent: body.error?.permanent ?? res.status < 500,
    retryAfter,
  });
}

/**
 * The original servers answer errors as `200 {"error":{…}}`: a bad code or unknown uuid is
 * "invalid request" on a PUT, an unregistered uuid "not registered" on a GET. Taken for what
 * they mean, not for an unreachable API (which would be retried forever).
 */
function originalErrorCode(method: 'GET' | 'PUT', diagnostic: string): ErrorCode {
  if (/not registered/i.test(diagnostic)) return 'NOT_REGISTERED';
  if (method === 'PUT') return 'AUTH_FAILED';
  return 'BAD_REQUEST';
}

/** Registers a hidden server with a TOTP code; resolves to its `R` triple. */
export function registerWithApi(
  api: string,
  uuid: string,
  code: string,
  signal?: AbortSignal,
): Promise<RendezvousTriple> {
  return call(api, 'PUT', { uuid, response: code }, signal);
}

/** Looks a hidden server up; resolves to its `I` triple. */
export function lookupWithApi(api: string, uuid: string, signal?: AbortSignal): Promise<RendezvousTriple> {
  return call(api, 'GET', { uuid }, signal);
}
