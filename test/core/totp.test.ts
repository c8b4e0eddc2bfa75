import { describe, expect, it } from 'vitest';
import { codeForStep, currentCode, type TotpParams, timeStep, verifyCode } from '../../core/totp.js';

// RFC 6238 appendix B: seeds are the ASCII strings below, 8 digits, 30 s steps.
const b32 = (ascii: string) => {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const byte of Buffer.from(ascii)) bits += byte.toString(2).padStart(8, '0');
  let out = '';
  for (let i = 0; i < bits.length; i += 5)
    out += alphabet[Number.parseInt(bits.slice(i, i + 5).padEnd(5, '0'), 2)];
  return out;
};
const seeds: Record<TotpParams['algorithm'], string> = {
  SHA1: b32('12345678901234567890'),
  SHA256: b32('12345678901234567890123456789012'),
  SHA512: b32('1234567890123456789012345678901234567890123456789012345678901234'),
};
const vectors: Array<[number, TotpParams['algorithm'], string]> = [
  [59, 'SHA1', '94287082'],
  [59, 'SHA256', '46119246'],
  [59, 'SHA512', '90693936'],
  [1111111109, 'SHA1', '07081804'],
  [1111111109, 'SHA256', '68084774'],
  [1111111109, 'SHA512', '25091201'],
  [1111111111, 'SHA1', '14050471'],
  [1234567890, 'SHA1', '89005924'],
  [1234567890, 'SHA256', '91819424'],
  [2000000000, 'SHA1', '69279037'],
  [2000000000, 'SHA512', '38618901'],
  [20000000000, 'SHA1', '65353130'],
  [20000000000, 'SHA256', '77737706'],
  [20000000000, 'SHA512', '47863826'],
];

describe('TOTP (RFC 6238 test vectors)', () => {
  it.each(vectors)('T=%i %s → %s', (t, algorithm, code) => {
    const p: TotpParams = { secret: seeds[algorithm], digits: 8, step: 30, algorithm };
    expect(currentCode(p, t * 1000)).toBe(code);
    expect(codeForStep(p, Math.floor(t / 30))).toBe(code);
    expect(verifyCode(p, code, t * 1000)).toBe(Math.floor(t / 30));
  });
});

describe('verifyCode window', () => {
  const p: TotpParams = { secret: seeds.SHA1, digits: 6, step: 30, algorithm: 'SHA1' };
  const now = 1_700_000_000_000;
  const step = timeStep(p, now);

  it('accepts codes one step old and one step new, returning their step', () => {
    expect(verifyCode(p, codeForStep(p, step - 1), now)).toBe(step - 1);
    expect(verifyCode(p, codeForStep(p, step), now)).toBe(step);
    expect(verifyCode(p, codeForStep(p, step + 1), now)).toBe(step + 1);
  });

  it('rejects codes two steps away', () => {
    expect(verifyCode(p, codeForStep(p, step - 2), now)).toBeNull();
    expect(verifyCode(p, codeForStep(p, step + 2), now)).toBeNull();
  });

  it('rejects codes of the wrong shape without comparing', () => {
    const code = codeForStep(p, step);
    expect(verifyCode(p, `${code}0`, now)).toBeNull();
    expect(verifyCode(p, code.slice(1), now)).toBeNull();
    expect(verifyCode(p, 'abcdef', now)).toBeNull();
  });
});
