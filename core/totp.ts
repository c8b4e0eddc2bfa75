/** TOTP (RFC 6238) for hidden-server authentication, on the maintained `otpauth` library. */
import { Secret, TOTP } from 'otpauth';

/** The TOTP parameters stored with an identity. */
export interface TotpParams {
  /** Base32 secret. */
  secret: string;
  digits: number;
  /** Seconds per time step. */
  step: number;
  algorithm: 'SHA1' | 'SHA256' | 'SHA512';
}

/** Drift tolerated, in steps either side of now. */
export const TOTP_WINDOW = 1;

/** Defaults for new identities: what authenticator apps and the original package use. */
export const TOTP_DEFAULTS = { digits: 6, step: 30, algorithm: 'SHA1' } as const;

/** A new random 160-bit base32 secret. */
export function newTotpSecret(): string {
  return new Secret({ size: 20 }).base32;
}

function totpOf(p: TotpParams, label?: string): TOTP {
  return new TOTP({
    issuer: 'rendezvous',
    label: label ?? 'hidden-server',
    secret: Secret.fromBase32(p.secret),
    digits: p.digits,
    period: p.step,
    algorithm: p.algorithm,
  });
}

/** The time step a timestamp falls in. */
export function timeStep(p: Pick<TotpParams, 'step'>, nowMs: number): number {
  return Math.floor(nowMs / 1000 / p.step);
}

/** The code for a given time step. */
export function codeForStep(p: TotpParams, step: number): string {
  return totpOf(p).generate({ timestamp: step * p.step * 1000 });
}

/** The code for now. */
export function currentCode(p: TotpParams, nowMs: number = Date.now()): string {
  return totpOf(p).generate({ timestamp: nowMs });
}

/**
 * Checks a code against the window around `nowMs` (constant-time comparison inside otpauth).
 * Returns the time step the code belongs to, or null. Replay protection is the caller's:
 * the step must be greater than the last accepted one.
 */
export function verifyCode(p: TotpParams, code: string, nowMs: number = Date.now()): number | null {
  if (code.length !== p.digits || !/^[0-9]+$/.test(code)) return null;
  const delta = totpOf(p).validate({ token: code, timestamp: nowMs, window: TOTP_WINDOW });
  return delta === null ? null : timeStep(p, nowMs) + delta;
}

/** The `otpauth://` URI authenticator apps and the agent understand. */
export function otpauthUri(p: TotpParams, uuid: string): string {
  return totpOf(p, uuid).toString();
}
