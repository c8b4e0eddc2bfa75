/**
 * Typed errors with stable codes. Adapters (the store, the API client) translate vendor
 * errors into these; the edges (HTTP handlers, relay sessions) map them to status codes and
 * `-ERR` lines in exactly one place each.
 */

/** Stable error codes shared by the API, the relay and the client library. */
export type ErrorCode =
  | 'BAD_REQUEST'
  | 'METHOD_NOT_ALLOWED'
  | 'NOT_FOUND'
  | 'AUTH_FAILED'
  | 'NOT_REGISTERED'
  | 'TOO_MANY_ATTEMPTS'
  /** The identity is disabled: said only to a caller whose code was right (HTTP 403). */
  | 'IDENTITY_DISABLED'
  /** The code was right at a length this identity does not accept: said only to a right code (HTTP 400). */
  | 'CODE_LENGTH_REFUSED'
  /** The identity's monthly byte quota is spent: no new rendezvous until the month ends or the operator raises it (HTTP 429). */
  | 'QUOTA_EXCEEDED'
  | 'STORE_UNAVAILABLE'
  | 'ALREADY_EXISTS'
  | 'COOKIE_UNKNOWN'
  | 'COOKIE_EXPIRED'
  | 'COOKIE_REPLACED'
  | 'LINE_TOO_LONG'
  | 'MALFORMED_LINE'
  | 'HANDSHAKE_TIMEOUT'
  | 'BUSY'
  | 'NO_HIDDEN_SERVER'
  | 'TOO_MANY_PARKED'
  | 'PROTOCOL'
  | 'RELAY_REFUSED'
  | 'UNREACHABLE'
  | 'TIMEOUT'
  | 'ABORTED'
  /** An option passed to the library is missing or malformed (a programming error, never retried). */
  | 'INVALID_OPTION';

/** Base class of every error this project raises on purpose. */
export class RendezvousError extends Error {
  readonly code: ErrorCode;
  /** True when retrying the same request cannot succeed. */
  readonly permanent: boolean;
  /** Seconds after which a retry may succeed (429, 503). */
  readonly retryAfter?: number;
  /**
   * For operators only: the cause in one line, naming the setting to fix (a store failure's
   * `store: table "X" not found …`). The CLI prints it and the API logs it; it never goes on
   * the wire to API clients, whose answer stays `message`.
   */
  readonly detail?: string;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { permanent?: boolean; retryAfter?: number; cause?: unknown; detail?: string } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RendezvousError';
    this.code = code;
    this.permanent = opts.permanent ?? true;
    this.retryAfter = opts.retryAfter;
    if (opts.detail !== undefined) this.detail = opts.detail;
  }
}

/** A parameter is missing or malformed (HTTP 400). */
export const badRequest = (message: string) => new RendezvousError('BAD_REQUEST', message);

/** Unknown uuid and wrong code must look the same, so there is one message for both. */
export const authFailed = () =>
  new RendezvousError('AUTH_FAILED', 'authentication failed', { permanent: true });

/** Told only to a caller whose code was right, so it proves nothing to a guesser. */
export const identityDisabled = () =>
  new RendezvousError('IDENTITY_DISABLED', 'identity disabled', { permanent: true });

/** Told only to a caller whose code was right at a length the identity does not accept. */
export const codeLengthRefused = () =>
  new RendezvousError('CODE_LENGTH_REFUSED', 'code length not accepted for this identity', {
    permanent: true,
  });

/** What the relay says (`-ERR quota exceeded`, and the HTTP 429's diagnostic) when an identity's monthly quota is spent. */
export const QUOTA_EXCEEDED_MESSAGE = 'quota exceeded';

/**
 * An identity's monthly byte quota is spent. Not permanent (the operator may raise it; a new month
 * resets it), but not worth retrying before `retryAfter`: the seconds to the next UTC month.
 */
export const quotaExceeded = (nowMs: number = Date.now()) =>
  new RendezvousError('QUOTA_EXCEEDED', QUOTA_EXCEEDED_MESSAGE, {
    permanent: false,
    retryAfter: secondsToNextMonth(nowMs),
  });

/** Seconds from `nowMs` to the start of the next UTC calendar month (at least 1). */
export function secondsToNextMonth(nowMs: number): number {
  const d = new Date(nowMs);
  const next = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
  return Math.max(1, Math.ceil((next - nowMs) / 1000));
}

/**
 * The store could not be reached or refused the request for reasons of its own; `detail` says
 * which (server/store/errors.ts), for operators.
 */
export const storeUnavailable = (cause?: unknown, detail?: string) =>
  new RendezvousError('STORE_UNAVAILABLE', 'store unavailable, try again later', {
    permanent: false,
    retryAfter: 5,
    cause,
    detail,
  });

/**
 * Narrowing helper for `catch (err)` blocks. Also recognises an error from the client package's
 * other module format (its ESM and CommonJS builds each have their own class) by name and code.
 */
export const isRendezvousError = (err: unknown, code?: ErrorCode): err is RendezvousError =>
  (err instanceof RendezvousError ||
    (err instanceof Error &&
      err.name === 'RendezvousError' &&
      typeof (err as { code?: unknown }).code === 'string')) &&
  (code === undefined || (err as RendezvousError).code === code);
