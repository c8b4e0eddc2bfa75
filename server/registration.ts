/**
 * The registration domain: provisioning identities, registering hidden servers (TOTP, replay,
 * failure limits) and answering mobile look-ups with a rendezvous triple. Transport-free: the
 * Lambda handlers and the CLI both call in here.
 */
import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import { authFailed, badRequest, RendezvousError } from '../core/errors.js';
import {
  base32Decode,
  isAsciiSecret,
  newAsciiTotpSecret,
  newTotpSecret,
  ORIGINAL_COMPAT,
  otpauthUri,
  TOTP_DEFAULTS,
  type TotpCompat,
  type TotpParams,
  verifyCode,
} from '../core/totp.js';
import type { RendezvousTriple } from '../core/triple.js';
import {
  DEFAULT_COOKIE_TTL_SECONDS,
  isLive,
  mobileCookieFor,
  NO_EXPIRY,
  newCookie,
  secretsEqual,
} from './cookies.js';
import { type Identity, type Reservation, SPLIT_COOKIE_SCHEME, type Store } from './store/store.js';

// The triple lives in its own file so the client package's declarations never reach the store.
export type { RendezvousTriple } from '../core/triple.js';

/** Where this deployment's relay is reached, and registration policy. */
export interface RegistrationPolicy {
  relayHost: string;
  relayPort: number;
  /** The relay's generic protocol over TLS (same host), when it has a TLS listener. */
  relayTlsPort?: number;
  region?: string;
  cookieTtlSeconds?: number;
  /** Wrong-code guesses per uuid evaluated inside `failureWindowSeconds`. */
  maxFailures?: number;
  /** Wrong-code guesses per source address (IPv4 address, IPv6 /64) inside the window. */
  maxFailuresPerSource?: number;
  failureWindowSeconds?: number;
}

/** Defaults of the guess limits: 10 per uuid and 5 per source address per 5 minutes. */
export const FAILURE_LIMIT_DEFAULTS = {
  maxFailures: 10,
  maxFailuresPerSource: 5,
  failureWindowSeconds: 300,
} as const;

/** Further looks at a full per-source budget before a 429, and the base pause between them. */
export const SOURCE_RESERVE_RETRIES = 3;
export const SOURCE_RESERVE_RETRY_MS = 50;

/** Source addresses remembered per identity as having registered (exempt from its lockout). */
export const MAX_TRUSTED_SOURCES = 8;

/**
 * The key a source address is counted under: an IPv4 address as is, an IPv6 address by its /64
 * (one host usually holds a whole /64), anything else (no address known) under one shared key.
 */
export function sourceKeyOf(address: string | undefined): string {
  const a = (address ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
  if (isIP(a) === 4) return a;
  if (isIP(a) !== 6) return 'unknown';
  const [head = '', tail = ''] = a.toLowerCase().split('::');
  const h = head ? head.split(':') : [];
  const t = a.includes('::') && tail ? tail.split(':') : [];
  const groups = [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

const UUID_SHAPE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** Validates a hidden-server uuid parameter (printable, bounded, no separators that matter). */
export function checkUuid(uuid: string | undefined): string {
  if (uuid === undefined || uuid === '') throw badRequest('missing parameter: uuid');
  if (!UUID_SHAPE.test(uuid)) throw badRequest('malformed parameter: uuid');
  return uuid;
}

/** Validates a TOTP response parameter. */
export function checkResponse(response: string | undefined): string {
  if (response === undefined || response === '') throw badRequest('missing parameter: response');
  if (!/^[0-9]{6,10}$/.test(response)) throw badRequest('malformed parameter: response');
  return response;
}

/** What `provision` returns: shown once, then only the store has the secret. */
export interface ProvisionedIdentity extends TotpParams {
  uuid: string;
  otpauth: string;
  compat?: TotpCompat;
}

/** Fewest secret bytes an existing secret may have (80 bits, what authenticator apps use). */
export const MIN_SECRET_BYTES = 10;

/** Validates an existing base32 secret; returns it upper-cased, without padding or spaces. */
export function checkSecret(secret: string): string {
  let bytes: Buffer;
  try {
    bytes = base32Decode(secret);
  } catch {
    throw badRequest('the secret is not base32');
  }
  if (bytes.length < MIN_SECRET_BYTES)
    throw badRequest(`the secret is shorter than ${MIN_SECRET_BYTES} bytes`);
  return secret.replace(/[\s=]/g, '').toUpperCase();
}

/**
 * The compatibility settings for an existing secret used the original's way: speakeasy-style
 * codes when the secret is binary (its codes differ from RFC 6238), else plain RFC 6238 keys.
 */
export function originalCompatFor(secret: string, digits: 'original' | number = 'original'): TotpCompat {
  return { ...ORIGINAL_COMPAT, digits, encoding: isAsciiSecret(secret) ? 'rfc6238' : 'speakeasy' };
}

/**
 * Creates a hidden-server identity: a fresh TOTP secret, or `secret` (an existing one: never
 * from argv). With `compat`, codes are checked the original's way; a fresh compat secret is
 * ASCII (40 characters), as the original minted them.
 */
export async function provisionIdentity(
  store: Store,
  opts: {
    uuid?: string;
    label?: string;
    nowMs?: number;
    secret?: string;
    compat?: TotpCompat;
    /** Step and algorithm of an existing secret (default 30 s, SHA1). */
    params?: Partial<Pick<TotpParams, 'step' | 'algorithm'>>;
  } = {},
): Promise<ProvisionedIdentity> {
  const uuid = checkUuid(opts.uuid ?? randomUUID());
  if (opts.compat) checkCompat(opts.compat);
  const secret =
    opts.secret !== undefined
      ? checkSecret(opts.secret)
      : opts.compat
        ? newAsciiTotpSecret()
        : newTotpSecret();
  const params: TotpParams = {
    ...TOTP_DEFAULTS,
    ...opts.params,
    secret,
    // `digits` of a compat identity is only informative (its `compat.digits` decides).
    digits:
      opts.compat && typeof opts.compat.digits === 'number'
        ? opts.compat.digits
        : opts.compat
          ? 10
          : TOTP_DEFAULTS.digits,
  };
  await store.createIdentity({
    uuid,
    label: opts.label,
    createdAt: Math.floor((opts.nowMs ?? Date.now()) / 1000),
    ...params,
    ...(opts.compat ? { compat: opts.compat } : {}),
  });
  return {
    uuid,
    ...params,
    otpauth: otpauthUri(params, uuid),
    ...(opts.compat ? { compat: opts.compat } : {}),
  };
}

/**
 * Replaces an identity's TOTP secret; every registration, cookie and park made with the old one
 * ends (the store deletes the registration and cookie, relays drop parks at their next check).
 * The new secret is returned once. The operator console calls this; so should any other tool.
 */
export async function rotateIdentitySecret(store: Store, uuid: string): Promise<ProvisionedIdentity> {
  // A rotation makes the identity strict (an imported one loses its compatibility settings): the
  // new secret goes to an agent of this project, whose codes are RFC 6238 with 6 digits.
  const params: TotpParams = { secret: newTotpSecret(), ...TOTP_DEFAULTS };
  await store.rotateSecret(checkUuid(uuid), params);
  return { uuid, ...params, otpauth: otpauthUri(params, uuid) };
}

/**
 * Checks a compatibility setting's values (they come from an operator's command line or a record).
 * Throws BAD_REQUEST naming the field.
 */
export function checkCompat(c: TotpCompat): TotpCompat {
  if (c.digits !== 'original' && !(Number.isInteger(c.digits) && c.digits >= 6 && c.digits <= 10))
    throw badRequest('digits: original or 6–10');
  if (c.encoding !== 'rfc6238' && c.encoding !== 'speakeasy')
    throw badRequest('encoding: rfc6238 or speakeasy');
  if (c.window !== 0 && c.window !== 1) throw badRequest('window: 0 or 1');
  if (typeof c.reuseWithinStep !== 'boolean') throw badRequest('reuseWithinStep: true or false');
  if (
    c.cookieLifetime !== 'next-registration' &&
    !(Number.isInteger(c.cookieLifetime) && c.cookieLifetime >= 60 && c.cookieLifetime <= 366 * 86_400)
  )
    throw badRequest('cookie lifetime: next-registration or 60–31622400 seconds');
  return c;
}

/**
 * Sets an identity's compatibility settings, or makes it strict (undefined). Registrations stand;
 * the new rules apply from the next code checked (cookie lifetime: from the next registration).
 */
export async function setIdentityCompat(
  store: Store,
  uuid: string,
  compat: TotpCompat | undefined,
): Promise<void> {
  const digits = !compat ? TOTP_DEFAULTS.digits : compat.digits === 'original' ? 10 : compat.digits;
  await store.setCompat(checkUuid(uuid), compat ? checkCompat(compat) : undefined, digits);
}

/** Disables (ending its registration, cookie and parks, as a rotation does) or re-enables an identity. */
export async function setIdentityDisabled(store: Store, uuid: string, disabled: boolean): Promise<void> {
  await store.setDisabled(checkUuid(uuid), disabled);
}

/**
 * Authenticates a hidden server by TOTP and makes a new registration for it, replacing (and so
 * invalidating) its previous cookie. Unknown uuid, disabled identity, wrong code and replayed code
 * all fail with the same AUTH_FAILED.
 */
export async function registerHiddenServer(
  store: Store,
  policy: RegistrationPolicy,
  uuid: string,
  code: string,
  nowMs: number = Date.now(),
  /** The caller's address (API Gateway's `sourceIp`), for the per-source guess limit. */
  source?: string,
  /**
   * Where codes are claimed and guesses counted: the identity's home replica when this region is
   * another one of a global table (see `homeClaims`), else `store`. Replication between replicas
   * lags, so a conditional write in this region would not see a step accepted in another one
   * moments ago; on one replica, a code is accepted once anywhere and guesses count everywhere.
   */
  claims: Store = store,
): Promise<RendezvousTriple> {
  const identity = await claims.getIdentity(uuid);
  const src = sourceKeyOf(source);
  const step = await verifyWithinLimits(claims, policy, uuid, identity, code, src, nowMs);
  const generation = (identity as Identity).generation ?? 0;
  const extra = { generation, trustedSources: trust(identity, src) };
  if (
    !(await claims.acceptStep(uuid, step, 'register', undefined, extra)) &&
    // The original let a code register any number of times within its step (each PUT a new cookie).
    !(
      (identity as Identity).compat?.reuseWithinStep &&
      (await claims.reuseStep(uuid, step, 'register', COMPAT_MAX_REUSES_PER_STEP, extra))
    )
  )
    throw authFailed();

  const nowSec = Math.floor(nowMs / 1000);
  const lifetime = (identity as Identity).compat?.cookieLifetime;
  // The hidden server gets R<hiddenCookie>; everything stored, and the look-up, use the one-way
  // derivation, so knowing the public I cookie does not let anyone park as the hidden server.
  const hiddenCookie = newCookie();
  const cookie = mobileCookieFor(hiddenCookie);
  const replaced = await store.putRegistration({
    uuid,
    cookie,
    cookieScheme: SPLIT_COOKIE_SCHEME,
    generation,
    host: policy.relayHost,
    port: policy.relayPort,
    ...(policy.relayTlsPort ? { tlsPort: policy.relayTlsPort } : {}),
    region: policy.region,
    registeredAt: nowSec,
    expiresAt:
      lifetime === 'next-registration'
        ? NO_EXPIRY
        : nowSec + (lifetime ?? policy.cookieTtlSeconds ?? DEFAULT_COOKIE_TTL_SECONDS),
  });
  // A replaced cookie that was to live until this registration now has the ordinary lifetime,
  // so TTL removes its record (it is refused as replaced from now on either way).
  if (replaced && replaced.expiresAt > nowSec + DEFAULT_COOKIE_TTL_SECONDS) {
    await store.expireCookie(replaced.cookie, nowSec + DEFAULT_COOKIE_TTL_SECONDS);
  }
  // A rotation or disable that ran while we registered must win: withdraw what we just wrote.
  const after = await claims.getIdentity(uuid);
  if (!after || after.disabled || (after.generation ?? 0) !== generation) {
    await store.deleteRegistration(uuid, cookie);
    throw authFailed();
  }
  return withTls(
    { host: policy.relayHost, port: policy.relayPort, cookie: `R${hiddenCookie}` },
    policy.relayTlsPort,
  );
}

/**
 * Most uses of one code within its step for compat identities with `reuseWithinStep` (the
 * original allowed any number): enough for an original HTTP-specific client that re-parks with
 * the same code after each of ~8 rendezvous a second, yet a captured code cannot open unbounded
 * registrations or parks. Past it, the code is refused until the next step.
 */
export const COMPAT_MAX_REUSES_PER_STEP = 256;

/** The identity's trusted sources with `src` added (newest last, bounded). */
function trust(identity: Identity | undefined, src: string): string[] {
  const list = (identity?.trustedSources ?? []).filter((s) => s !== src);
  return [...list, src].slice(-MAX_TRUSTED_SOURCES);
}

const tooManyAttempts = (retryAfter: number) =>
  new RendezvousError('TOO_MANY_ATTEMPTS', 'too many failed attempts, try again later', {
    permanent: false,
    retryAfter,
  });

/**
 * The checks every code goes through. A guess is reserved before it is evaluated — first against
 * its source address's budget, then against the uuid's — so concurrent guesses cannot exceed
 * either. When the uuid's budget is spent, only sources that registered it before are still
 * evaluated (the real agent keeps working during an attack); everyone else gets 429. Unknown,
 * disabled and known uuids go through exactly the same steps and answers. A valid code (even a
 * replayed one) is no guess: its reservations are given back, so an agent restarting within one
 * step trips nothing. Returns the code's time step; replay is the caller's conditional write.
 */
async function verifyWithinLimits(
  store: Store,
  policy: FailurePolicy,
  uuid: string,
  identity: Identity | undefined,
  code: string,
  src: string,
  nowMs: number,
): Promise<number> {
  const nowSec = Math.floor(nowMs / 1000);
  const perUuid = policy.maxFailures ?? FAILURE_LIMIT_DEFAULTS.maxFailures;
  const perSource = policy.maxFailuresPerSource ?? FAILURE_LIMIT_DEFAULTS.maxFailuresPerSource;
  const windowSec = policy.failureWindowSeconds ?? FAILURE_LIMIT_DEFAULTS.failureWindowSeconds;

  let bySource = await store.reserveAttempt('source', src, perSource, nowSec, windowSec);
  // Valid codes hold a reservation for a few milliseconds before giving it back, so a burst of
  // them from one address (hidden servers behind one NAT starting together) can find the budget
  // full for a moment: look again briefly before answering 429. Each look is still a reservation.
  for (let i = 0; !bySource.ok && i < SOURCE_RESERVE_RETRIES; i++) {
    await new Promise((r) => setTimeout(r, SOURCE_RESERVE_RETRY_MS * (1 + Math.random())));
    bySource = await store.reserveAttempt('source', src, perSource, nowSec, windowSec);
  }
  if (!bySource.ok) throw tooManyAttempts(bySource.retryAfter);
  const byUuid: Reservation = await store.reserveAttempt('uuid', uuid, perUuid, nowSec, windowSec);
  if (!byUuid.ok && !(identity?.trustedSources ?? []).includes(src)) {
    // Not evaluated: the source's reservation goes back.
    await store.refundAttempt('source', src, bySource.windowStart);
    throw tooManyAttempts(byUuid.retryAfter);
  }
  const step = identity && !identity.disabled ? verifyCode(identity, code, nowMs) : null;
  if (step === null) throw authFailed();
  await Promise.all([
    store.refundAttempt('source', src, bySource.windowStart),
    byUuid.ok ? store.refundAttempt('uuid', uuid, byUuid.windowStart) : undefined,
  ]);
  return step;
}

/** The failure-limit part of a policy. */
export type FailurePolicy = Pick<
  RegistrationPolicy,
  'maxFailures' | 'maxFailuresPerSource' | 'failureWindowSeconds'
>;

/** How the relay authenticates CONNECTs of the HTTP-specific protocol. */
export interface ConnectPolicy extends FailurePolicy {
  /**
   * `live-park` (default): a code a CONNECT already used is accepted again by CONNECT, inside its
   * window, while a park made with it is live — what clients of the original, which repeat
   * the TOTP on every re-park, need. `never`: strictly one use.
   */
  codeReuse?: 'live-park' | 'never';
  cookieTtlSeconds?: number;
}

/** A successful CONNECT: the cookie to hand back, and the code step it used (if a code). */
export interface ConnectGrant {
  uuid: string;
  cookie: string;
  step?: number;
  /** The identity's generation the grant was made in (the relay drops parks of older ones). */
  generation: number;
}

/**
 * Authenticates `CONNECT uuid:<ID>?response=<TOTP>` or `?cookie=<c>`. A fresh code mints the
 * uuid's CONNECT cookie; the cookie then stands in for codes until it expires. A code used by
 * a PUT is never accepted here, nor a CONNECT's code by a PUT (they share `lastStep`).
 */
export async function authenticateConnect(
  store: Store,
  policy: ConnectPolicy,
  uuid: string,
  /** `source`: the CONNECT's remote address, for the per-source guess limit. */
  cred: { response?: string; cookie?: string; source?: string },
  liveParkMadeWith: (uuid: string, step: number) => Promise<boolean>,
  nowMs: number = Date.now(),
  /** Where codes are claimed and guesses counted (the home replica; see `registerHiddenServer`). */
  claims: Store = store,
): Promise<ConnectGrant> {
  const identity = await claims.getIdentity(uuid);
  if (cred.cookie !== undefined) {
    if (
      identity &&
      !identity.disabled &&
      identity.httpCookie &&
      identity.httpCookieExpiresAt !== undefined &&
      isLive(identity.httpCookieExpiresAt, nowMs) &&
      secretsEqual(identity.httpCookie, cred.cookie)
    ) {
      return { uuid, cookie: identity.httpCookie, generation: identity.generation ?? 0 };
    }
    throw authFailed();
  }
  const src = sourceKeyOf(cred.source);
  const step = await verifyWithinLimits(claims, policy, uuid, identity, cred.response ?? '', src, nowMs);
  const generation = (identity as Identity).generation ?? 0;
  const cookie = newCookie();
  const expiresAt = Math.floor(nowMs / 1000) + (policy.cookieTtlSeconds ?? DEFAULT_COOKIE_TTL_SECONDS);
  if (
    await claims.acceptStep(
      uuid,
      step,
      'connect',
      { cookie, expiresAt },
      { generation, trustedSources: trust(identity, src) },
    )
  )
    return { uuid, cookie, step, generation };

  // Already used. A compat identity with reuseWithinStep takes a CONNECT's code again within its
  // step, with or without a live park (the original's semantics; bounded per step).
  if ((identity as Identity).compat?.reuseWithinStep) {
    const reused = await claims.reuseStep(uuid, step, 'connect', COMPAT_MAX_REUSES_PER_STEP, {
      generation,
      trustedSources: trust(identity, src),
    });
    if (reused?.httpCookie) return { uuid, cookie: reused.httpCookie, step, generation };
    throw authFailed();
  }
  // Only a CONNECT's code may come back, and only while its park lives.
  if ((policy.codeReuse ?? 'live-park') === 'live-park') {
    const now = await claims.getIdentity(uuid);
    if (
      now &&
      !now.disabled &&
      now.lastStep === step &&
      now.lastStepBy === 'connect' &&
      now.httpCookie &&
      (now.generation ?? 0) === generation &&
      (await liveParkMadeWith(uuid, step))
    ) {
      return { uuid, cookie: now.httpCookie, step, generation };
    }
  }
  throw authFailed();
}

/**
 * Answers a mobile client's look-up with the hidden server's triple (I-prefixed cookie). A
 * registration from before the R/I split counts as none (`getRegistration` skips it).
 */
export async function lookupHiddenServer(
  store: Store,
  uuid: string,
  nowMs: number = Date.now(),
): Promise<RendezvousTriple> {
  const reg = await store.getRegistration(uuid, nowMs);
  if (!reg) {
    throw new RendezvousError('NOT_REGISTERED', 'hidden server not registered', {
      permanent: false,
    });
  }
  return withTls({ host: reg.host, port: reg.port, cookie: `I${reg.cookie}` }, reg.tlsPort);
}

/** Adds `tlsPort` to a triple only when there is one (the seed's triple has three fields). */
function withTls(triple: RendezvousTriple, tlsPort: number | undefined): RendezvousTriple {
  return tlsPort ? { ...triple, tlsPort } : triple;
}
