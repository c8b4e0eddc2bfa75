/**
 * The registration domain: provisioning identities, registering hidden servers (TOTP, replay,
 * failure limits) and answering mobile look-ups with a rendezvous triple. Transport-free: the
 * Lambda handlers and the CLI both call in here.
 */
import { randomUUID } from 'node:crypto';
import { DEFAULT_COOKIE_TTL_SECONDS, isLive, newCookie, secretsEqual } from './cookies.js';
import { authFailed, badRequest, RendezvousError } from './errors.js';
import type { Identity, Store } from './store.js';
import { newTotpSecret, otpauthUri, TOTP_DEFAULTS, type TotpParams, verifyCode } from './totp.js';

/**
 * The triple handed to both sides; `cookie` carries its `R`/`I` prefix. `tlsPort` is additive
 * (original clients ignore unknown fields and use `port` in plain TCP): where set, the same host
 * speaks the generic protocol over TLS on that port, and our agent and client use it.
 */
export interface RendezvousTriple {
  host: string;
  port: number;
  cookie: string;
  tlsPort?: number;
}

/** Where this deployment's relay is reached, and registration policy. */
export interface RegistrationPolicy {
  relayHost: string;
  relayPort: number;
  /** The relay's generic protocol over TLS (same host), when it has a TLS listener. */
  relayTlsPort?: number;
  region?: string;
  cookieTtlSeconds?: number;
  /** Failed attempts per uuid tolerated inside `failureWindowSeconds`. */
  maxFailures?: number;
  failureWindowSeconds?: number;
}

/** Defaults of the failure limit: 10 failures per 5 minutes. */
export const FAILURE_LIMIT_DEFAULTS = { maxFailures: 10, failureWindowSeconds: 300 } as const;

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
}

/** Creates a hidden-server identity with a fresh TOTP secret. */
export async function provisionIdentity(
  store: Store,
  opts: { uuid?: string; label?: string; nowMs?: number } = {},
): Promise<ProvisionedIdentity> {
  const uuid = checkUuid(opts.uuid ?? randomUUID());
  const params: TotpParams = { secret: newTotpSecret(), ...TOTP_DEFAULTS };
  await store.createIdentity({
    uuid,
    label: opts.label,
    createdAt: Math.floor((opts.nowMs ?? Date.now()) / 1000),
    ...params,
  });
  return { uuid, ...params, otpauth: otpauthUri(params, uuid) };
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
): Promise<RendezvousTriple> {
  const identity = await store.getIdentity(uuid);
  const step = await verifyWithinLimits(store, policy, identity, code, nowMs);
  if (!(await store.acceptStep(uuid, step, 'register'))) throw authFailed();

  const nowSec = Math.floor(nowMs / 1000);
  const cookie = newCookie();
  await store.putRegistration({
    uuid,
    cookie,
    host: policy.relayHost,
    port: policy.relayPort,
    ...(policy.relayTlsPort ? { tlsPort: policy.relayTlsPort } : {}),
    region: policy.region,
    registeredAt: nowSec,
    expiresAt: nowSec + (policy.cookieTtlSeconds ?? DEFAULT_COOKIE_TTL_SECONDS),
  });
  return withTls(
    { host: policy.relayHost, port: policy.relayPort, cookie: `R${cookie}` },
    policy.relayTlsPort,
  );
}

/**
 * The checks every code goes through: identity enabled, failure limit not reached, code valid
 * in the window (a wrong one is counted). Returns the code's time step; replay is the caller's
 * conditional write.
 */
async function verifyWithinLimits(
  store: Store,
  policy: FailurePolicy,
  identity: Identity | undefined,
  code: string,
  nowMs: number,
): Promise<number> {
  if (!identity || identity.disabled) throw authFailed();
  const nowSec = Math.floor(nowMs / 1000);
  const maxFailures = policy.maxFailures ?? FAILURE_LIMIT_DEFAULTS.maxFailures;
  const windowSec = policy.failureWindowSeconds ?? FAILURE_LIMIT_DEFAULTS.failureWindowSeconds;
  const windowEnds = (identity.failWindowStart ?? 0) + windowSec;
  if ((identity.failCount ?? 0) >= maxFailures && windowEnds > nowSec) {
    throw new RendezvousError('TOO_MANY_ATTEMPTS', 'too many failed attempts, try again later', {
      permanent: false,
      retryAfter: windowEnds - nowSec,
    });
  }
  const step = verifyCode(identity, code, nowMs);
  if (step === null) {
    await store.recordFailure(identity.uuid, nowSec, windowSec);
    throw authFailed();
  }
  return step;
}

/** The failure-limit part of a policy. */
export type FailurePolicy = Pick<RegistrationPolicy, 'maxFailures' | 'failureWindowSeconds'>;

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
  cred: { response?: string; cookie?: string },
  liveParkMadeWith: (uuid: string, step: number) => Promise<boolean>,
  nowMs: number = Date.now(),
): Promise<ConnectGrant> {
  const identity = await store.getIdentity(uuid);
  if (cred.cookie !== undefined) {
    if (
      identity &&
      !identity.disabled &&
      identity.httpCookie &&
      identity.httpCookieExpiresAt !== undefined &&
      isLive(identity.httpCookieExpiresAt, nowMs) &&
      secretsEqual(identity.httpCookie, cred.cookie)
    ) {
      return { uuid, cookie: identity.httpCookie };
    }
    throw authFailed();
  }
  const step = await verifyWithinLimits(store, policy, identity, cred.response ?? '', nowMs);
  const cookie = newCookie();
  const expiresAt = Math.floor(nowMs / 1000) + (policy.cookieTtlSeconds ?? DEFAULT_COOKIE_TTL_SECONDS);
  if (await store.acceptStep(uuid, step, 'connect', { cookie, expiresAt })) return { uuid, cookie, step };

  // Already used. Only a CONNECT's code may come back, and only while its park lives.
  if ((policy.codeReuse ?? 'live-park') === 'live-park') {
    const now = await store.getIdentity(uuid);
    if (
      now &&
      !now.disabled &&
      now.lastStep === step &&
      now.lastStepBy === 'connect' &&
      now.httpCookie &&
      (await liveParkMadeWith(uuid, step))
    ) {
      return { uuid, cookie: now.httpCookie, step };
    }
  }
  throw authFailed();
}

/** Answers a mobile client's look-up with the hidden server's triple (I-prefixed cookie). */
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
