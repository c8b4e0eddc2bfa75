/**
 * Guess limits: every code, from a PUT registration or a relay CONNECT, is a guess reserved
 * against its source address's budget and its uuid's before it is evaluated, and given back when
 * it was valid; a one-time proof is checked without any. The failure-limit defaults, the source
 * key (IPv6 by /64) and trusted sources.
 */
import { isIP } from 'node:net';
import { authFailed, identityDisabled, RendezvousError } from '../core/errors.js';
import { type CompatMatch, isProof, matchCompatCode, verifyCode, verifyProof } from '../core/totp.js';
import { CodeAnswer, lengthRefusal, withLength } from './code-rule.js';
import type { CodeLength, Identity, Reservation, Store } from './store/index.js';

/** The failure-limit part of a policy. */
export interface FailurePolicy {
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

/** Further looks at a full per-source budget before a 429. */
export const SOURCE_RESERVE_RETRIES = 3;
/** The base pause between two looks at a full per-source budget (milliseconds, jittered up to twice). */
export const SOURCE_RESERVE_RETRY_MS = 50;

/** Source addresses remembered per identity as having registered (exempt from its lockout). */
export const MAX_TRUSTED_SOURCES = 8;

/**
 * Most uses of one code within its step for compat identities with `reuseWithinStep` (the
 * original allowed any number): enough for an original HTTP-specific client that re-parks with
 * the same code after each of ~8 rendezvous a second, yet a captured code cannot open unbounded
 * registrations or parks. Past it, the code is refused until the next step.
 */
export const COMPAT_MAX_REUSES_PER_STEP = 256;

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

/** The identity's trusted sources with `src` added (newest last, bounded). */
export function trust(identity: Identity | undefined, src: string): string[] {
  const list = (identity?.trustedSources ?? []).filter((s) => s !== src);
  return [...list, src].slice(-MAX_TRUSTED_SOURCES);
}

const tooManyAttempts = (retryAfter: number) =>
  new RendezvousError('TOO_MANY_ATTEMPTS', 'too many failed attempts, try again later', {
    permanent: false,
    retryAfter,
  });

/** A response that authenticated: the step it claims, and what the claim also writes. */
export interface Verified {
  step: number;
  /** A one-time proof (no budget was touched), not a code. */
  proof: boolean;
  /** A compat identity's code lengths with this code's added, when that changed them. */
  codeLengths?: CodeLength[];
  /**
   * The valid code's reservations being given back (a proof: none). The caller awaits it beside
   * its claim, so a store failure there still fails the request.
   */
  settled: Promise<void>;
}

/**
 * A secret no identity has: an unknown uuid's proof is computed against it, so unknown and known
 * uuids take the same work.
 */
const NO_SECRET = { secret: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', step: 30 };

/**
 * A one-time proof: checked against the identity's window without reserving anything (it cannot
 * be guessed, so strangers' guesses never delay it). A wrong proof and an unknown uuid answer the
 * same AUTH_FAILED, whatever the identity's settings; a right one for a disabled identity, 403.
 */
function verifyProofOnly(
  identity: Identity | undefined,
  uuid: string,
  proof: string,
  nowMs: number,
): Verified {
  const step = verifyProof(identity ?? NO_SECRET, uuid, proof, nowMs);
  // Decided here, never answered the original's way: proofs cost nothing, so their refusals must
  // not tell a compat identity from any other uuid.
  if (step === null || !identity) throw new CodeAnswer(authFailed());
  if (identity.disabled) throw identityDisabled();
  return { step, proof: true, settled: Promise.resolve() };
}

/** A code's match: for compat identities the original's rule (any length), for strict ones RFC 6238. */
function matchOf(identity: Identity, code: string, nowMs: number): CompatMatch | null {
  if (identity.compat) return matchCompatCode(identity, identity.compat, code, nowMs);
  const step = verifyCode(identity, code, nowMs);
  return step === null ? null : { step, kind: code.length };
}

/**
 * Reserves one guess against the source's budget. A full budget is looked at again briefly (valid
 * codes hold a reservation for a few milliseconds, so a burst of them from one address can find it
 * full for a moment); 429 when it stays full.
 */
async function reserveSource(
  store: Store,
  src: string,
  perSource: number,
  windowSec: number,
  nowSec: number,
): Promise<Reservation & { ok: true }> {
  let bySource = await store.reserveAttempt('source', src, perSource, nowSec, windowSec);
  // Each look is still a reservation.
  for (let i = 0; !bySource.ok && i < SOURCE_RESERVE_RETRIES; i++) {
    await new Promise((r) => setTimeout(r, SOURCE_RESERVE_RETRY_MS * (1 + Math.random())));
    bySource = await store.reserveAttempt('source', src, perSource, nowSec, windowSec);
  }
  if (!bySource.ok) throw tooManyAttempts(bySource.retryAfter);
  return bySource;
}

/**
 * The checks every code goes through. A guess is reserved before it is evaluated — first against
 * its source address's budget (beside the identity's read), then against the uuid's — so
 * concurrent guesses cannot exceed either; a guess counts once whatever its length. When the
 * uuid's budget is spent, only sources that registered it before are still evaluated (the real
 * agent keeps working during an attack); everyone else gets 429. So a right code from such a
 * source, which no length rule can refuse, is answered without the uuid's reservation: its
 * outcome could not change the answer. Unknown, disabled and known uuids go through the same
 * steps, and every wrong code the same AUTH_FAILED. Only to a right code: IDENTITY_DISABLED, or
 * CODE_LENGTH_REFUSED for a compat identity's length it does not take (see code-rule.ts); those
 * keep their guess, except disabled. A valid code (even a replayed one) is no guess: its
 * reservations are given back (`settled`, which the caller awaits beside its claim), so an agent
 * restarting within one step trips nothing. A one-time proof skips the budgets. Returns the step
 * to claim; replay is the caller's conditional write. `identity` may still be on its way (its
 * read runs beside the source's reservation).
 */
export async function verifyWithinLimits(
  store: Store,
  policy: FailurePolicy,
  uuid: string,
  identityRead: Identity | undefined | Promise<Identity | undefined>,
  code: string,
  src: string,
  nowMs: number,
): Promise<Verified> {
  if (isProof(code)) return verifyProofOnly(await identityRead, uuid, code, nowMs);
  const nowSec = Math.floor(nowMs / 1000);
  const perUuid = policy.maxFailures ?? FAILURE_LIMIT_DEFAULTS.maxFailures;
  const perSource = policy.maxFailuresPerSource ?? FAILURE_LIMIT_DEFAULTS.maxFailuresPerSource;
  const windowSec = policy.failureWindowSeconds ?? FAILURE_LIMIT_DEFAULTS.failureWindowSeconds;

  const [read, reserved] = await Promise.allSettled([
    identityRead,
    reserveSource(store, src, perSource, windowSec, nowSec),
  ]);
  if (reserved.status === 'rejected') throw reserved.reason;
  const bySource = reserved.value;
  const giveSource = () => store.refundAttempt('source', src, bySource.windowStart);
  if (read.status === 'rejected') {
    // The identity could not be read: nothing was evaluated, so the reservation goes back.
    await giveSource().catch(() => {});
    throw read.reason;
  }
  const identity = read.value;
  const match = identity ? matchOf(identity, code, nowMs) : null;
  const trusted = (identity?.trustedSources ?? []).includes(src);
  if (trusted && identity && match && !identity.disabled && (!identity.compat || match.kind === 'full')) {
    const settled = giveSource();
    settled.catch(() => {});
    return { step: match.step, proof: false, codeLengths: withLength(identity, match.kind), settled };
  }

  const byUuid: Reservation = await store.reserveAttempt('uuid', uuid, perUuid, nowSec, windowSec);
  if (!byUuid.ok && !trusted) {
    // Not evaluated: the source's reservation goes back.
    await giveSource();
    throw tooManyAttempts(byUuid.retryAfter);
  }
  const refund = async () => {
    await Promise.all([
      giveSource(),
      byUuid.ok ? store.refundAttempt('uuid', uuid, byUuid.windowStart) : undefined,
    ]);
  };
  // A counted guess remembers its source, so a settings change can give it back (store.setCompat).
  const counted = async (err: RendezvousError): Promise<never> => {
    if (byUuid.ok) await store.noteFailedGuess(uuid, byUuid.windowStart, src, bySource.windowStart);
    throw err;
  };

  if (!identity || !match) return counted(authFailed());
  if (identity.disabled) {
    await refund();
    throw identityDisabled();
  }
  // Under attack: other guesses spent part of the uuid's budget in this window (or all of it), or
  // stood in the window just before it.
  const attack = byUuid.ok
    ? {
        underAttack: byUuid.count > 1 || byUuid.earlier > 0,
        retryAfter: byUuid.windowStart + windowSec - nowSec,
      }
    : { underAttack: true, retryAfter: byUuid.retryAfter };
  const refused = lengthRefusal(identity, match.kind, attack);
  if (refused) return counted(refused);
  // Given back beside the caller's claim: the claim does not depend on it.
  const settled = refund();
  settled.catch(() => {});
  return { step: match.step, proof: false, codeLengths: withLength(identity, match.kind), settled };
}
