/** Rendezvous cookies: random, bound to one uuid, with an expiry every read checks. */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Random bytes in a cookie (144 bits, above the 128-bit floor of the security model). */
export const COOKIE_BYTES = 18;

/** Default lifetime of a registration and its cookie, in seconds. */
export const DEFAULT_COOKIE_TTL_SECONDS = 24 * 60 * 60;

/**
 * The expiry (epoch seconds, 3000-01-01) of a registration and cookie that live "until the next
 * registration" (compat identities): every expiry check passes and DynamoDB TTL never deletes it.
 */
export const NO_EXPIRY = 32_503_680_000;

/** A fresh cookie body (without the `R`/`I` prefix): base64url of CSPRNG bytes. */
export function newCookie(): string {
  return randomBytes(COOKIE_BYTES).toString('base64url');
}

/** Length of a mobile (`I`) cookie body: 24 base64url characters, 144 bits. */
export const MOBILE_COOKIE_LENGTH = 24;

const MOBILE_COOKIE_CONTEXT = 'rendezvous I cookie v1\u0000';

/**
 * The mobile (`I`) cookie that pairs with a hidden server's (`R`) cookie: a one-way derivation,
 * so the public look-up's `I` cookie tells nobody the `R` cookie that parks as the hidden server.
 * The store and the relay key everything by this value; the `R` cookie is never stored.
 */
export function mobileCookieFor(hiddenCookie: string): string {
  return createHash('sha256')
    .update(MOBILE_COOKIE_CONTEXT + hiddenCookie)
    .digest('base64url')
    .slice(0, MOBILE_COOKIE_LENGTH);
}

/** Constant-time string equality for secrets (cookies, cluster secrets). */
export function secretsEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  // Compare against itself on length mismatch so the time taken does not depend on where they differ.
  if (ab.length !== bb.length) {
    timingSafeEqual(ab, ab);
    return false;
  }
  return timingSafeEqual(ab, bb);
}

/** True when an epoch-seconds expiry is still in the future. */
export function isLive(expiresAt: number, nowMs: number = Date.now()): boolean {
  return expiresAt * 1000 > nowMs;
}

/**
 * A pool of CSPRNG bytes handed out as base64url tokens: one randomBytes call serves hundreds of
 * peer nonces or correlation ids (a call per token cost a noticeable share of a pairing's CPU).
 */
export function pooledTokens(bytesPerToken: number, tokensPerRefill = 256): () => string {
  let pool = Buffer.alloc(0);
  let used = 0;
  return () => {
    if (used + bytesPerToken > pool.length) {
      pool = randomBytes(bytesPerToken * tokensPerRefill);
      used = 0;
    }
    used += bytesPerToken;
    return pool.toString('base64url', used - bytesPerToken, used);
  };
}
