/**
 * CONNECT authentication (the HTTP-specific protocol): the relay checks `uuid:<ID>?response=<TOTP>`
 * (within the guess limits, once per code, with the original's reuse rules), a one-time proof in
 * the same parameter (outside the limits), or `?cookie=<c>`.
 */
import { authFailed } from '../core/errors.js';
import { asOriginal, proofUsed } from './code-rule.js';
import { DEFAULT_COOKIE_TTL_SECONDS, isLive, newCookie, secretsEqual } from './cookies.js';
import {
  COMPAT_MAX_REUSES_PER_STEP,
  type FailurePolicy,
  sourceKeyOf,
  trust,
  verifyWithinLimits,
} from './limits.js';
import type { Identity, Store } from './store/index.js';

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
  if (cred.cookie !== undefined) {
    const identity = await claims.getIdentity(uuid);
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
  // Read beside the source's guess reservation (limits.ts): neither needs the other.
  const identity = claims.getIdentity(uuid);
  identity.catch(() => {});
  try {
    return await connectWithCode(claims, policy, uuid, identity, cred, liveParkMadeWith, nowMs);
  } catch (err) {
    // A compat identity's refusals keep the original's statuses, not permanent (code-rule.ts).
    throw asOriginal(await identity.catch(() => undefined), err);
  }
}

async function connectWithCode(
  claims: Store,
  policy: ConnectPolicy,
  uuid: string,
  identityRead: Promise<Identity | undefined>,
  cred: { response?: string; source?: string },
  liveParkMadeWith: (uuid: string, step: number) => Promise<boolean>,
  nowMs: number,
): Promise<ConnectGrant> {
  const src = sourceKeyOf(cred.source);
  const verified = await verifyWithinLimits(
    claims,
    policy,
    uuid,
    identityRead,
    cred.response ?? '',
    src,
    nowMs,
  );
  const identity = await identityRead;
  const { step } = verified;
  // Refused after a right proof: said so (only its holder sees it); after a code, as before.
  const refused = () => (verified.proof ? proofUsed() : authFailed());
  const generation = (identity as Identity).generation ?? 0;
  const cookie = newCookie();
  const expiresAt = Math.floor(nowMs / 1000) + (policy.cookieTtlSeconds ?? DEFAULT_COOKIE_TTL_SECONDS);
  const extra = {
    generation,
    trustedSources: trust(identity, src),
    ...(verified.codeLengths ? { codeLengths: verified.codeLengths } : {}),
  };
  // The reservations go back beside the claim (the claim does not depend on them).
  const [accepted] = await Promise.all([
    claims.acceptStep(uuid, step, 'connect', { cookie, expiresAt }, extra),
    verified.settled,
  ]);
  if (accepted) return { uuid, cookie, step, generation };

  // Already used. A compat identity with reuseWithinStep takes a CONNECT's code again within its
  // step, with or without a live park (the original's semantics; bounded per step).
  if ((identity as Identity).compat?.reuseWithinStep) {
    const reused = await claims.reuseStep(uuid, step, 'connect', COMPAT_MAX_REUSES_PER_STEP, extra);
    if (reused?.httpCookie) return { uuid, cookie: reused.httpCookie, step, generation };
    throw refused();
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
  throw refused();
}
