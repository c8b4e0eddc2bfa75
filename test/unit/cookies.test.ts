import { describe, expect, it } from 'vitest';
import { COOKIE_BYTES, isLive, newCookie, secretsEqual } from '../../core/cookies.js';
import { parseCookieLine } from '../../core/relay-line.js';

describe('cookies', () => {
  it('carry at least 128 random bits and fit the relay line format', () => {
    expect(COOKIE_BYTES * 8).toBeGreaterThanOrEqual(128);
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const c = newCookie();
      expect(Buffer.from(c, 'base64url').length).toBe(COOKIE_BYTES);
      expect(parseCookieLine(`R${c}`).cookie).toBe(c);
      seen.add(c);
    }
    expect(seen.size).toBe(1000);
  });

  it('expire at their expiry second', () => {
    expect(isLive(100, 99_999)).toBe(true);
    expect(isLive(100, 100_000)).toBe(false);
  });

  it('compare equal only when equal, whatever the lengths', () => {
    expect(secretsEqual('abc', 'abc')).toBe(true);
    expect(secretsEqual('abc', 'abd')).toBe(false);
    expect(secretsEqual('abc', 'abcd')).toBe(false);
  });
});
