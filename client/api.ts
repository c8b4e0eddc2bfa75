/**
 * The registration API as a client sees it: PUT to register, GET to look up — against one API URL
 * or several (one per region, or a global name), tried in order with fail-over.
 */
import { isRendezvousError, RendezvousError } from '../core/errors.js';
import type { RendezvousTriple } from '../core/triple.js';
import { errorOfAnswer } from './answers.js';

/** Request timeout for API calls. */
export const API_TIMEOUT_MS = 10_000;
/** Request timeout while another API URL is left to fail over to: a silent region costs less. */
export const API_FAILOVER_TIMEOUT_MS = 5_000;

/** One registration API base URL, or several (one per region) to fail over between. */
export type ApiUrls = string | readonly string[];

/**
 * The API URLs in order: an array, or one string of comma-separated URLs (as `RENDEZVOUS_API`
 * and `--api` take them); blanks and repeats dropped. Throws BAD_REQUEST when none is left or
 * one is not an http(s) URL.
 */
export function apiUrlList(api: ApiUrls): string[] {
  const all = (typeof api === 'string' ? [api] : [...api]).flatMap((a) => a.split(','));
  const urls = [...new Set(all.map((a) => a.trim()).filter(Boolean))];
  if (urls.length === 0) throw new RendezvousError('BAD_REQUEST', 'no registration API URL given');
  for (const u of urls) {
    let ok = false;
    try {
      ok = /^https?:$/.test(new URL(u).protocol);
    } catch {}
    if (!ok) throw new RendezvousError('BAD_REQUEST', `not an http(s) URL: ${u}`);
  }
  return urls;
}

/** The URL that last answered, per list (so a down region is not waited for on every call). */
const lastGood = new Map<string, string>();

/**
 * True when another region's API may do better: nothing answered (refused, reset, timeout) or
 * the answer was a 5xx or unreadable. Definite answers (400, 401, 404, 429) are the same in every
 * region, and a refused code must not be tried again elsewhere.
 */
function failsOver(err: unknown): boolean {
  return isRendezvousError(err, 'UNREACHABLE') && !definite.has(err);
}

/** Errors made from a 4xx answer that has no code of its own (403, 405, …): definite all the same. */
const definite = new WeakSet<object>();

/**
 * Runs `attempt` against each URL in turn, starting with the one that last answered, and moves
 * on only while `failsOver`; throws the last URL's error when none answers.
 */
async function withFailover<T>(
  api: ApiUrls,
  attempt: (url: string, timeoutMs: number) => Promise<T>,
): Promise<T> {
  const urls = apiUrlList(api);
  const key = urls.join(',');
  const first = lastGood.get(key);
  const order = first && urls.includes(first) ? [first, ...urls.filter((u) => u !== first)] : urls;
  let lastErr: unknown;
  for (const [i, url] of order.entries()) {
    try {
      const out = await attempt(url, i < order.length - 1 ? API_FAILOVER_TIMEOUT_MS : API_TIMEOUT_MS);
      lastGood.set(key, url);
      return out;
    } catch (err) {
      if (!failsOver(err)) {
        // A definite answer came from this URL: it is up.
        if (isRendezvousError(err) && err.code !== 'ABORTED') lastGood.set(key, url);
        throw err;
      }
      lastErr = err;
    }
  }
  throw lastErr;
}

async function call(
  api: string,
  method: 'GET' | 'PUT',
  params: Record<string, string>,
  signal?: AbortSignal,
  timeoutMs: number = API_TIMEOUT_MS,
): Promise<RendezvousTriple> {
  const url = new URL(api);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const timeout = AbortSignal.timeout(timeoutMs);
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
  let body: { result?: RendezvousTriple; error?: unknown } = {};
  try {
    body = JSON.parse(text);
  } catch {}
  if (res.ok && body?.result && typeof body.result.cookie === 'string' && !body.error) return body.result;
  // `api` has no query: the code never reaches a message.
  const error = errorOfAnswer(
    { status: res.status, header: (n) => res.headers.get(n) ?? undefined, text },
    method,
    api,
  );
  // A 4xx (or a foreign answer) is the same from every region: no fail-over.
  if ((res.status >= 400 && res.status < 500) || error.code === 'PROTOCOL') definite.add(error);
  throw error;
}

/**
 * Registers a hidden server with a TOTP code; resolves to its `R` triple. With several URLs, one
 * that does not answer (or answers 5xx) is skipped; a refused code is never sent to another.
 */
export function registerWithApi(
  api: ApiUrls,
  uuid: string,
  code: string,
  signal?: AbortSignal,
): Promise<RendezvousTriple> {
  return withFailover(api, (url, ms) => call(url, 'PUT', { uuid, response: code }, signal, ms));
}

/** Looks a hidden server up; resolves to its `I` triple (fail-over as for `registerWithApi`). */
export function lookupWithApi(api: ApiUrls, uuid: string, signal?: AbortSignal): Promise<RendezvousTriple> {
  return withFailover(api, (url, ms) => call(url, 'GET', { uuid }, signal, ms));
}
