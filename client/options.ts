/**
 * The options of a hidden server (and of `exposeHiddenServer`), and checks of what an application passes to the library, before anything starts: a missing or
 * malformed option is an `INVALID_OPTION` RendezvousError naming the option, thrown at once,
 * instead of a `TypeError` from deep inside (or, worse, an agent that retries a bad URL forever).
 * JavaScript callers get the same checks the types give TypeScript callers.
 */
import { RendezvousError } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { ApiUrls } from './api.js';

/** Options of a hidden server. Nothing is read from the environment here (the CLI does that). */
export interface HiddenServerOptions {
  /** `generic` (default): register with the API, park with `R<c>`. `http`: park with CONNECT. */
  protocol?: 'generic' | 'http';
  /**
   * Registration API base URL (generic protocol), or several (one per region, or a
   * comma-separated string): tried in order from the last that answered, failing over when one
   * does not answer or answers 5xx — never after a refused code.
   */
  api?: ApiUrls;
  /** The relay's HTTP-specific endpoint, `http://host:port` or `https://host` (http protocol). */
  relay?: string;
  uuid: string;
  /** Base32 secret, or an `otpauth://` URI (which also carries digits and step). */
  secret: string;
  /** Parked connections kept at once (default 1). */
  pool?: number;
  /** Reconnect backoff bounds (default 250 ms → 30 s, jittered). */
  backoff?: { minMs: number; maxMs: number };
  /**
   * Refused codes tolerated on the steps after the first refused one before the secret is taken
   * for wrong (default AUTH_RETRY_STEPS). A restarted agent's first codes are often refused as
   * replays of what the previous process used in the same step.
   */
  authRetrySteps?: number;
  /**
   * How the agent authenticates. `auto` (default): the one-time proof (no guess budget is spent
   * on it, and a refusal is a verdict within seconds), falling back for the session to short codes
   * when the server does not know proofs (the original node-rendezvous, an older deployment).
   * `proof`: proofs only. `code`: short TOTP codes only.
   */
  auth?: 'auto' | 'proof' | 'code';
  /**
   * How short codes are computed: `rfc` (RFC 6238, default) or `speakeasy` (the original's: the
   * HMAC key is the UTF-8 encoding of the secret's bytes, which differs for binary secrets). An
   * otpauth URI with `encoding=speakeasy` selects it too.
   */
  codeEncoding?: 'rfc' | 'speakeasy';
  /**
   * Digits of each short code sent, 6–10, the original's way (the last n digits of the
   * truncation value, unpadded: what the original's server checks whatever its identity says).
   * Default: the secret's (6, or an otpauth URI's `digits`; `digits=40` sends the whole value).
   */
  codeDigits?: number;
  /**
   * The longest wait, in ms, after the relay refused a park because the identity's monthly quota
   * is spent (default QUOTA_RECHECK_MS, 15 min; the wait is shorter when the month ends sooner).
   * The whole pool waits (one log line, one `'quota'` event), then one slot tries again: a quota
   * the operator raised is noticed within this time. Tests shorten it.
   */
  quotaRecheckMs?: number;
  /**
   * Where the agent's records go (core/log.ts schema): parks and re-parks, each rendezvous's
   * end (rid, bytes, duration, outcome), the target going down or up, errors.
   */
  log?: Log;
}

/** Options of `exposeHiddenServer`: a hidden server that forwards to a local port. */
export interface ExposeOptions extends HiddenServerOptions {
  /** The local service each rendezvous is spliced to. */
  target: { host: string; port: number };
  /**
   * How often the target is probed with a TCP handshake while idle (default PROBE_EVERY_MS;
   * 0: never), so that each park tells the relay whether it is reachable. No probe runs while a
   * rendezvous is live or when one reached the target within the last period.
   */
  probeEveryMs?: number;
}

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
  optionalInteger(opts, 'codeDigits', 6, 10);
  optionalInteger(opts, 'quotaRecheckMs', 1, 2_147_483_647);
  if (opts.auth !== undefined && !['auto', 'proof', 'code'].includes(opts.auth as string))
    throw invalidOption('auth', `'auto', 'proof' or 'code' (got ${String(opts.auth)})`);
  if (opts.codeEncoding !== undefined && opts.codeEncoding !== 'rfc' && opts.codeEncoding !== 'speakeasy')
    throw invalidOption('codeEncoding', `'rfc' or 'speakeasy' (got ${String(opts.codeEncoding)})`);
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
