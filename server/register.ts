/**
 * Registration: a hidden server proves its identity with a TOTP code (within the guess limits,
 * once per code) or a one-time proof (outside them), and gets a new `R` triple, replacing its
 * previous cookie. Transport-free: the Lambda handler and the CLI both call in here.
 */
import { authFailed, badRequest, isRendezvousError, RendezvousError } from '../core/errors.js';
import { PROOF_DIGITS } from '../core/totp.js';
import type { RendezvousTriple, ReplacedRegistration } from '../core/triple.js';
import { asOriginal, proofUsed } from './code-rule.js';
import { DEFAULT_COOKIE_TTL_SECONDS, isLive, mobileCookieFor, NO_EXPIRY, newCookie } from './cookies.js';
import {
  COMPAT_MAX_REUSES_PER_STEP,
  type FailurePolicy,
  sourceKeyOf,
  trust,
  verifyWithinLimits,
} from './limits.js';
import { type Identity, type Registration, SPLIT_COOKIE_SCHEME, type Store } from './store/index.js';

/** Where this deployment's relay is reached, and registration policy. */
export interface RegistrationPolicy extends FailurePolicy {
  relayHost: string;
  relayPort: number;
  /** The relay's generic protocol over TLS (same host), when it has a TLS listener. */
  relayTlsPort?: number;
  region?: string;
  cookieTtlSeconds?: number;
}

const RESPONSE_SHAPE = new RegExp(`^(?:[0-9]{6,10}|[0-9]{${PROOF_DIGITS}})$`);

/** Validates a response parameter: a code of 6–10 digits, or a one-time proof (PROOF_DIGITS). */
export function checkResponse(response: string | undefined): string {
  if (response === undefined || response === '') throw badRequest('missing parameter: response');
  if (!RESPONSE_SHAPE.test(response)) throw badRequest('malformed parameter: response');
  return response;
}

/**
 * Authenticates a hidden server by a code or a one-time proof and makes a new registration for
 * it, replacing (and so invalidating) its previous cookie. Unknown uuid, wrong code and replayed
 * code fail with the same AUTH_FAILED; a compat identity's refusals are answered the original's
 * way (code-rule.ts). A right code for a disabled identity gets IDENTITY_DISABLED.
 */
export async function registerHiddenServer(
  store: Store,
  policy: RegistrationPolicy,
  uuid: string,
  /** The `response` parameter as sent (checked here, once the identity's rules are known). */
  response: string | undefined,
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
  // Read beside the source's guess reservation (limits.ts): neither needs the other.
  const identity = claims.getIdentity(uuid);
  identity.catch(() => {});
  try {
    return await register(store, policy, uuid, identity, response, nowMs, source, claims);
  } catch (err) {
    throw asOriginal(await identity.catch(() => undefined), err);
  }
}

/**
 * The request's store round trips, one after another (the rest run beside them):
 *   1. the identity's read, beside the source's guess reservation;
 *   2. the uuid's guess reservation, for a code (limits.ts) — not for a proof, nor for a right
 *      code from a source that registered the uuid before (its outcome could not change the
 *      answer);
 *   3. the step's claim, beside the reservations' refund and the new cookie item (inert until
 *      step 4 makes it current; dropped if the claim is refused);
 *   4. the registration's swap (refused by a rotation's or disable's fence), beside its change
 *      notice and the identity's re-read; claimed in another region, the re-read follows it;
 *   +1 for a compat identity whose replaced cookie lived until this registration: its life is
 *      shortened.
 */
async function register(
  store: Store,
  policy: RegistrationPolicy,
  uuid: string,
  identityRead: Promise<Identity | undefined>,
  response: string | undefined,
  nowMs: number,
  source: string | undefined,
  claims: Store,
): Promise<RendezvousTriple> {
  let code: string;
  if (response !== undefined && RESPONSE_SHAPE.test(response)) code = response;
  else {
    // The original answered a malformed code like a wrong one, and so do compat identities: an
    // answer that tells them from other uuids costs a guess, as a wrong code does.
    const identity = await identityRead;
    try {
      code = checkResponse(response);
    } catch (err) {
      if (!identity?.compat) throw err;
      code = '';
    }
  }
  const src = sourceKeyOf(source);
  const verified = await verifyWithinLimits(claims, policy, uuid, identityRead, code, src, nowMs);
  const identity = (await identityRead) as Identity;
  const { step } = verified;
  const generation = identity.generation ?? 0;
  const extra = {
    generation,
    trustedSources: trust(identity, src),
    ...(verified.codeLengths ? { codeLengths: verified.codeLengths } : {}),
  };
  const claim = async () =>
    (await claims.acceptStep(uuid, step, 'register', undefined, extra)) ||
    // The original let a code register any number of times within its step (each PUT a new cookie).
    Boolean(
      identity.compat?.reuseWithinStep &&
        (await claims.reuseStep(uuid, step, 'register', COMPAT_MAX_REUSES_PER_STEP, extra)),
    );

  const nowSec = Math.floor(nowMs / 1000);
  const lifetime = identity.compat?.cookieLifetime;
  // The hidden server gets R<hiddenCookie>; everything stored, and the look-up, use the one-way
  // derivation, so knowing the public I cookie does not let anyone park as the hidden server.
  const hiddenCookie = newCookie();
  const cookie = mobileCookieFor(hiddenCookie);
  const registration: Registration = {
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
    ...(source ? { source } : {}),
  };
  // The cookie item is inert until the swap below makes it current, so it is written beside the
  // claim; the registration itself only once the claim has made this code's step used.
  const [claimed, , cookieWritten] = await Promise.allSettled([
    claim(),
    verified.settled,
    store.putRegistrationCookie(registration),
  ]);
  if (claimed.status !== 'fulfilled' || !claimed.value) {
    if (cookieWritten.status === 'fulfilled') await store.dropRegistrationCookie(cookie).catch(() => {});
    if (claimed.status === 'rejected') throw claimed.reason;
    throw verified.proof ? proofUsed() : authFailed();
  }
  if (cookieWritten.status === 'rejected') throw spentBy(cookieWritten.reason);

  // A rotation, disable or deletion that ran while we registered must win. On this region's own
  // replica its fence refuses the swap (or replaces what the swap wrote), and the identity is
  // re-read beside the swap as well (should its writer have stopped before the fence). Claimed
  // on another region's replica, the fence may not have replicated here yet: the identity is
  // re-read there once the swap is written, and the registration withdrawn if it changed.
  const swap = async () => {
    try {
      return await store.swapRegistration(registration);
    } catch (err) {
      throw spentBy(err);
    }
  };
  const recheck = () =>
    claims.getIdentity(uuid).catch((err) => {
      throw spentBy(err);
    });
  const [swapped, after] =
    claims === store ? await Promise.all([swap(), recheck()]) : [await swap(), await recheck()];
  if (swapped.fenced) {
    await store.dropRegistrationCookie(cookie).catch(() => {});
    throw authFailed();
  }
  if (!after || after.disabled || (after.generation ?? 0) !== generation) {
    await store.deleteRegistration(uuid, cookie);
    throw authFailed();
  }
  const { replaced } = swapped;
  // A replaced cookie that was to live until this registration now has the ordinary lifetime,
  // so TTL removes its record (it is refused as replaced from now on either way).
  if (replaced && replaced.expiresAt > nowSec + DEFAULT_COOKIE_TTL_SECONDS)
    await store.expireCookie(replaced.cookie, nowSec + DEFAULT_COOKIE_TTL_SECONDS);
  const triple = withTls(
    { host: policy.relayHost, port: policy.relayPort, cookie: `R${hiddenCookie}` },
    policy.relayTlsPort,
  );
  // Told only here, past the code check; compat identities keep the original's result keys.
  const was = identity?.compat ? undefined : replacedOf(replaced, nowMs);
  return was ? { ...triple, replaced: was } : triple;
}

/**
 * A store failure after the code's step was claimed: the code is used up though nothing was
 * registered, so the answer says so (a retry must use the next step's code or a new proof;
 * the same code is refused as replayed). Other errors as they are.
 */
function spentBy(err: unknown): unknown {
  if (!isRendezvousError(err, 'STORE_UNAVAILABLE')) return err;
  return new RendezvousError(
    'STORE_UNAVAILABLE',
    'store unavailable after the code was accepted: that code is spent, register again with the next one',
    { permanent: false, retryAfter: err.retryAfter, cause: err, detail: err.detail },
  );
}

/**
 * What a registration tells its successor about the one it replaced: when and from where, if
 * that one was live and its source is known. Said even when the source is the caller's own (two
 * agents on one machine); the agent decides whether it was a twin (the relay said its cookie was
 * replaced) or its own earlier registration.
 */
function replacedOf(old: Registration | undefined, nowMs: number): ReplacedRegistration | undefined {
  if (!old?.source || !isLive(old.expiresAt, nowMs) || old.cookieScheme !== SPLIT_COOKIE_SCHEME)
    return undefined;
  return { at: new Date(old.registeredAt * 1000).toISOString(), from: old.source };
}

/** Adds `tlsPort` to a triple only when there is one (the seed's triple has three fields). */
export function withTls(triple: RendezvousTriple, tlsPort: number | undefined): RendezvousTriple {
  return tlsPort ? { ...triple, tlsPort } : triple;
}
