/**
 * A model of the original node-rendezvous servers, written from the observed facts in
 * `shared/compat/original-behaviour.md` only (no code of the original, none of ours): how its
 * clients compute codes, what its records look like, and what it answers on the wire. The
 * compatibility suite checks our service against it case by case.
 */
import { createHmac, randomBytes } from 'node:crypto';

/** Base32 to bytes, by way of a bit string (deliberately not our core decoder). */
export function base32Bytes(text: string): Buffer {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const bits = [...text.replace(/=+$/, '').toUpperCase()]
    .map((c) => alphabet.indexOf(c).toString(2).padStart(5, '0'))
    .join('');
  const out: number[] = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) out.push(Number.parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(out);
}

/** Bytes to base32 (no padding), as the original's records hold secrets. */
export function toBase32(bytes: Buffer): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const bits = [...bytes].map((b) => b.toString(2).padStart(8, '0')).join('');
  let out = '';
  for (let i = 0; i < bits.length; i += 5)
    out += alphabet[Number.parseInt(bits.slice(i, i + 5).padEnd(5, '0'), 2)];
  return out;
}

/**
 * The code an original client sends for `step` (the facts: speakeasy's fork; the HMAC key is the
 * UTF-8 encoding of the decoded bytes taken as characters; the decimal value is cut from the
 * right to `length` characters, never padded — `length` 40 keeps the whole value).
 */
export function originalCode(base32: string, step: number, length = 40): string {
  const asChars = base32Bytes(base32).toString('latin1');
  const key = Buffer.from(asChars, 'utf8');
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', key).update(counter).digest();
  const offset = (mac[19] as number) & 0x0f;
  const value =
    (((mac[offset] as number) & 0x7f) << 24) |
    ((mac[offset + 1] as number) << 16) |
    ((mac[offset + 2] as number) << 8) |
    (mac[offset + 3] as number);
  const text = String(value);
  return text.substring(Math.max(0, text.length - length));
}

/** The RFC 6238 code (zero-padded, `digits` long) a standard authenticator computes: for contrast. */
export function rfcCode(base32: string, step: number, digits = 6): string {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', base32Bytes(base32)).update(counter).digest();
  const offset = (mac[19] as number) & 0x0f;
  const value = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(value % 10 ** digits).padStart(digits, '0');
}

/** A 40-character ASCII secret, base32-encoded (what the original minted). */
export function originalAsciiSecret(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const ascii = [...randomBytes(40)].map((b) => alphabet[b % alphabet.length]).join('');
  return toBase32(Buffer.from(ascii, 'ascii'));
}

/** A binary secret (bytes ≥ 0x80 included), base32-encoded: speakeasy's codes differ from RFC 6238 for it. */
export function binarySecret(): string {
  const bytes = randomBytes(20);
  bytes[0] = 0xff;
  return toBase32(bytes);
}

/** The redis record of an identity, exactly as the facts show it (a JSON string under the uuid). */
export function originalRecord(uuid: string, base32: string, length = 40): string {
  const issuer = 'https://registrar.example.com';
  return JSON.stringify({
    uuid,
    authURL: `otpauth://totp/${encodeURIComponent(`${issuer}:${uuid}`)}?secret=${base32}&issuer=${encodeURIComponent(issuer)}`,
    authParams: { algorithm: 'sha1', length, name: uuid, issuer, step: 30, base32, protocol: 'totp' },
  });
}

/** The step a time falls in (30 s). */
export const stepAt = (ms: number) => Math.floor(ms / 30_000);

/** One case of the original's wire behaviour: what it answers. */
export interface OriginalAnswer {
  status?: number;
  /** The JSON body's shape or the relay line. */
  body?: unknown;
  line?: string;
}

/** What the original's registration server answers (facts file, "Registration API"). */
export const ORIGINAL_API = {
  validPut: { status: 200, body: { result: { cookie: /^R/ } } },
  lookupRegistered: { status: 200, body: { result: { cookie: /^I/ } } },
  badCode: { status: 200, body: { error: { permanent: false, diagnostic: 'invalid request' } } },
  unknownUuid: { status: 200, body: { error: { permanent: false, diagnostic: 'invalid request' } } },
  lookupUnregistered: { status: 200, body: { error: { permanent: false, diagnostic: 'not registered' } } },
  missingUuid: { status: 404 },
  wrongMethod: { status: 405, allow: true },
  /** The same code again within its step: accepted, with a new cookie. */
  reusedCodeInStep: { status: 200, newCookie: true },
} as const;

/** What the original's relays answer (facts file, "Generic relay" and "HTTP-specific protocol"). */
export const ORIGINAL_RELAY = {
  paired: '+OK\n',
  nothingParked: '-ERR not ready\n',
  unknownCookie: '-ERR not registered\n',
  malformedLine: '-ERR invalid cookie\n',
  connectOk: 'HTTP/1.1 200\r\n\r\n',
  connectBadCode: 401,
  connectNoResponse: 407,
  connectNotUuid: 403,
  connectEarlyData: 409,
  mobileUnknownUuid: 404,
} as const;
