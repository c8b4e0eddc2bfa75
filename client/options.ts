/**
 * Checks of what an application passes to the library, before anything starts: a missing or
 * malformed option is an `INVALID_OPTION` RendezvousError naming the option, thrown at once,
 * instead of a `TypeError` from deep inside (or, worse, an agent that retries a bad URL forever).
 * JavaScript callers get the same checks the types give TypeScript callers.
 */
import { RendezvousError } from '../core/errors.js';

/** An `INVALID_OPTION` error for option `name`. */
export const invalidOption = (name: string, what: string, cause?: unknown) =>
  new RendezvousError('INVALID_OPTION', `option ${name}: ${what}`, { permanent: true, cause });

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

function nonEmptyString(o: Record<string, unknown>, name: string): void {
  if (typeof o[name] !== 'string' || (o[name] as string).trim() === '')
    throw invalidOption(name, 'a non-empty string is required');
}

function optionalInteger(o: Record<string, unknown>, name: string, min: number, max: number): void {
  const v = o[name];
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw invalidOption(name, `an integer from ${min} to ${max} is required (got ${String(v)})`);
}

/** An http(s) URL, or several: an array, or one string with commas between them. */
function urls(o: Record<string, unknown>, name: string): void {
  const v = o[name];
  const list = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',') : undefined;
  if (!list || list.length === 0) throw invalidOption(name, 'an http(s) URL is required');
  for (const u of list) {
    let url: URL | undefined;
    try {
      url = typeof u === 'string' ? new URL(u.trim()) : undefined;
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:'))
      throw invalidOption(name, `not an http(s) URL: ${String(u)}`);
  }
}

/** Checks `HiddenServerOptions` (and `ExposeOptions` when `target` is expected). */
export function checkHiddenServerOptions(opts: unknown, withTarget = false): void {
  if (!isRecord(opts)) throw invalidOption('options', 'an object is required');
  const protocol = opts.protocol ?? 'generic';
  if (protocol !== 'generic' && protocol !== 'http')
    throw invalidOption('protocol', `'generic' or 'http' (got ${String(protocol)})`);
  nonEmptyString(opts, 'uuid');
  if (typeof opts.secret !== 'string' || opts.secret.trim() === '')
    throw invalidOption('secret', 'the TOTP secret (base32, or an otpauth:// URI) is required');
  if (protocol === 'http') urls(opts, 'relay');
  else urls(opts, 'api');
  optionalInteger(opts, 'pool', 1, 1000);
  optionalInteger(opts, 'authRetrySteps', 0, 100);
  if (opts.backoff !== undefined) {
    const b = opts.backoff;
    if (!isRecord(b)) throw invalidOption('backoff', 'an object {minMs, maxMs} is required');
    optionalInteger(b, 'minMs', 1, 3_600_000);
    optionalInteger(b, 'maxMs', 1, 3_600_000);
    if (typeof b.minMs !== 'number' || typeof b.maxMs !== 'number' || b.minMs > b.maxMs)
      throw invalidOption('backoff', 'minMs and maxMs are required, minMs ≤ maxMs');
  }
  if (withTarget) {
    const t = opts.target;
    if (!isRecord(t)) throw invalidOption('target', 'an object {host, port} is required');
    nonEmptyString(t, 'host');
    if (typeof t.port !== 'number' || !Number.isInteger(t.port) || t.port < 1 || t.port > 65535)
      throw invalidOption('target.port', `a port from 1 to 65535 is required (got ${String(t.port)})`);
  }
}

/** Checks `ConnectOptions`. */
export function checkConnectOptions(opts: unknown): void {
  if (!isRecord(opts)) throw invalidOption('options', 'an object is required');
  urls(opts, 'api');
  nonEmptyString(opts, 'uuid');
  optionalInteger(opts, 'timeoutMs', 1, 2_147_483_647);
  if (opts.signal !== undefined && !(opts.signal instanceof AbortSignal))
    throw invalidOption('signal', 'an AbortSignal is required');
}
