/** TOTP (RFC 6238) for hidden-server authentication, on the maintained `otpauth` library. */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
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
export function verifyCode(
  p: TotpParams & { compat?: TotpCompat },
  code: string,
  nowMs: number = Date.now(),
): number | null {
  if (p.compat) return verifyCompatCode(p, p.compat, code, nowMs);
  if (code.length !== p.digits || !/^[0-9]+$/.test(code)) return null;
  const delta = totpOf(p).validate({ token: code, timestamp: nowMs, window: TOTP_WINDOW });
  return delta === null ? null : timeStep(p, nowMs) + delta;
}

/**
 * Length of a one-time proof: 32 decimal digits (about 106 bits). A proof goes in the same
 * `response` parameter as a code, but no number of guesses finds one, so the server checks it
 * without spending any guess budget (a stranger's wrong codes never delay the real agent).
 */
export const PROOF_DIGITS = 32;

/** True when a `response` value has the shape of a one-time proof rather than a short code. */
export function isProof(response: string): boolean {
  return response.length === PROOF_DIGITS && /^[0-9]+$/.test(response);
}

/**
 * The one-time proof of a strict identity for a time step: HMAC-SHA256 of the uuid and step
 * under the identity's secret, its first 128 bits in decimal, cut to PROOF_DIGITS (padded).
 * Bound to the uuid so two identities sharing a secret never share proofs.
 */
export function proofForStep(p: Pick<TotpParams, 'secret'>, uuid: string, step: number): string {
  const mac = createHmac('sha256', base32Decode(p.secret))
    .update(`rendezvous-proof:v1:${uuid}:${step}`)
    .digest();
  const value = BigInt(`0x${mac.subarray(0, 16).toString('hex')}`) % 10n ** BigInt(PROOF_DIGITS);
  return value.toString().padStart(PROOF_DIGITS, '0');
}

/** The `otpauth://` URI authenticator apps and the agent understand. */
export function otpauthUri(p: TotpParams, uuid: string): string {
  return totpOf(p, uuid).toString();
}

/**
 * How an identity imported from node-rendezvous computes and checks codes, where that differs
 * from the strict default. Absent on identities made here (strict RFC 6238, ±1 step, one use).
 */
export interface TotpCompat {
  /**
   * The shortest code accepted. A code is the last N characters of the RFC 4226
   * dynamic-truncation value in decimal, unreduced and unpadded (N its length, what speakeasy's
   * string truncation gives), or that whole value (1–10 digits; the original's `length` 40).
   * `original`: any N from 6, as the original; a number n (6–10): N from n, and the whole value
   * at any length.
   */
  digits: 'original' | number;
  /** `speakeasy`: the HMAC key is the UTF-8 encoding of the decoded secret bytes (differs for binary secrets). */
  encoding: 'rfc6238' | 'speakeasy';
  /** Steps of drift tolerated either side (the original: 0). */
  window: 0 | 1;
  /** A code may be used again within its own step (the original's semantics), a bounded number of times. */
  reuseWithinStep: boolean;
  /** Registration and cookie lifetime: seconds, or until the next registration (the original). */
  cookieLifetime: 'next-registration' | number;
  /** Where the identity came from (`node-rendezvous` for imports). */
  importedFrom?: string;
}

/** The compatibility settings of the original's identities (its `length` 40 records). */
export const ORIGINAL_COMPAT: TotpCompat = {
  digits: 'original',
  encoding: 'rfc6238',
  window: 0,
  reuseWithinStep: true,
  cookieLifetime: 'next-registration',
  importedFrom: 'node-rendezvous',
};

const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** Decodes base32 (RFC 4648, case-insensitive, padding and spaces ignored); throws on other characters. */
export function base32Decode(text: string): Buffer {
  const clean = text.replace(/[\s=]/g, '').toUpperCase();
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const ch of clean) {
    const v = BASE32_ALPHABET.indexOf(ch);
    if (v === -1) throw new Error('secret is not base32');
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

/** Encodes bytes as base32 (RFC 4648, no padding). */
export function base32Encode(bytes: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32_ALPHABET[(value >>> bits) & 31];
    }
  }
  if (bits > 0) out += BASE32_ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

/** Characters of the secrets `provision --compat` mints: printable ASCII that survives any shell or JSON. */
const ASCII_SECRET_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** Length of the original's ASCII secrets. */
export const ASCII_SECRET_LENGTH = 40;

/**
 * A new secret as the original minted them: 40 random ASCII characters (about 238 bits),
 * base32-encoded (64 characters). ASCII keys hash the same under speakeasy and RFC 6238.
 */
export function newAsciiTotpSecret(): string {
  const bytes = randomBytes(ASCII_SECRET_LENGTH * 2);
  let ascii = '';
  // Rejection sampling keeps every character equally likely (248 = 4 × 62).
  for (const b of bytes) {
    if (b < 248) ascii += ASCII_SECRET_ALPHABET[b % 62];
    if (ascii.length === ASCII_SECRET_LENGTH) break;
  }
  while (ascii.length < ASCII_SECRET_LENGTH) {
    const b = randomBytes(1)[0] as number;
    if (b < 248) ascii += ASCII_SECRET_ALPHABET[b % 62];
  }
  return base32Encode(Buffer.from(ascii, 'ascii'));
}

/** True when a base32 secret decodes to ASCII only (so speakeasy and RFC 6238 agree on it). */
export function isAsciiSecret(secret: string): boolean {
  return base32Decode(secret).every((b) => b < 0x80);
}

/** The HMAC key a compat identity's codes use. */
function compatKey(secret: string, encoding: TotpCompat['encoding']): Buffer {
  const raw = base32Decode(secret);
  // speakeasy decodes base32 to a binary string and hands it to `new Buffer(string)`, which
  // encodes it as UTF-8: every byte ≥ 0x80 becomes two.
  return encoding === 'speakeasy' ? Buffer.from(raw.toString('latin1'), 'utf8') : raw;
}

/** The RFC 4226 dynamic-truncation value (31 bits) for a counter. */
export function truncatedValue(key: Buffer, counter: number, algorithm: TotpParams['algorithm']): number {
  const msg = Buffer.alloc(8);
  msg.writeUInt32BE(Math.floor(counter / 2 ** 32), 0);
  msg.writeUInt32BE(counter >>> 0, 4);
  const mac = createHmac(algorithm.toLowerCase(), key).update(msg).digest();
  const offset = (mac[mac.length - 1] as number) & 0xf;
  return mac.readUInt32BE(offset) & 0x7fffffff;
}

/** A compat identity's code for a time step. */
export function compatCodeForStep(p: TotpParams, compat: TotpCompat, step: number): string {
  const value = String(truncatedValue(compatKey(p.secret, compat.encoding), step, p.algorithm));
  return compat.digits === 'original' ? value : value.slice(-compat.digits);
}

/** Fewest digits any code may have (the original refused shorter ones). */
export const MIN_CODE_DIGITS = 6;

/**
 * What a compat identity's code matched: its step, and `full` when it is the whole unreduced
 * value, else the number of last digits it gave.
 */
export interface CompatMatch {
  step: number;
  kind: number | 'full';
}

/** The shortest code a compat identity accepts, the whole value aside (`original`: 6, like the original). */
export function shortestCodeOf(compat: TotpCompat): number {
  return compat.digits === 'original' ? MIN_CODE_DIGITS : compat.digits;
}

/**
 * The original's rule: a code of 6–10 digits matches when it equals the last N characters of its
 * step's unreduced decimal value (N its length, no padding) — so the whole value matches too.
 * Lengths are not judged here (see `verifyCompatCode` and the server's limits). Every step of the
 * window is computed and compared in constant time, so the time taken says nothing.
 */
export function matchCompatCode(
  p: TotpParams,
  compat: TotpCompat,
  code: string,
  nowMs: number = Date.now(),
): CompatMatch | null {
  if (!/^[0-9]{6,10}$/.test(code)) return null;
  const now = timeStep(p, nowMs);
  const given = Buffer.from(code.padStart(10, ' '));
  let found: CompatMatch | null = null;
  for (let d = -compat.window; d <= compat.window; d++) {
    const value = String(truncatedValue(compatKey(p.secret, compat.encoding), now + d, p.algorithm));
    // A code longer than the value can only be compared with the whole value (and differs).
    const want = Buffer.from(value.slice(-code.length).padStart(10, ' '));
    if (timingSafeEqual(want, given) && found === null) {
      found = { step: now + d, kind: code.length === value.length ? 'full' : code.length };
    }
  }
  return found;
}

/**
 * Checks a compat identity's code against its window: the original's rule, at any length from
 * the identity's shortest (`compat.digits`) up, and the whole value at any length. Returns the
 * step the code belongs to, or null.
 */
export function verifyCompatCode(
  p: TotpParams,
  compat: TotpCompat,
  code: string,
  nowMs: number = Date.now(),
): number | null {
  const m = matchCompatCode(p, compat, code, nowMs);
  if (!m) return null;
  return m.kind === 'full' || m.kind >= shortestCodeOf(compat) ? m.step : null;
}

/**
 * Checks a one-time proof against the steps of the identity's window (its compat window, else
 * ±TOTP_WINDOW), in constant time. Returns the step it proves, or null. No number of guesses
 * finds a proof, so callers spend no guess budget on one.
 */
export function verifyProof(
  p: Pick<TotpParams, 'secret' | 'step'> & { compat?: Pick<TotpCompat, 'window'> },
  uuid: string,
  proof: string,
  nowMs: number = Date.now(),
): number | null {
  if (!isProof(proof)) return null;
  const window = p.compat ? p.compat.window : TOTP_WINDOW;
  const now = timeStep(p, nowMs);
  const given = Buffer.from(proof);
  let found: number | null = null;
  for (let d = -window; d <= window; d++) {
    const want = Buffer.from(proofForStep(p, uuid, now + d));
    if (timingSafeEqual(want, given) && found === null) found = now + d;
  }
  return found;
}
