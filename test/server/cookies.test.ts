import { describe, expect, it } from 'vitest';
import { parseCookieLine } from '../../core/relay-line.js';
import {
  COOKIE_BYTES,
  isLive,
  MOBILE_COOKIE_LENGTH,
  mobileCookieFor,
  newCookie,
  secretsEqual,
} from '../../server/cookies.js';
import { sourceKeyOf } from '../../server/limits.js';

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

  it('derive the mobile (I) cookie one-way from the hidden (R) cookie: fixed vector, 144 bits, line-safe', () => {
    const r = newCookie();
    const i = mobileCookieFor(r);
    expect(i).toHaveLength(MOBILE_COOKIE_LENGTH);
    expect(Buffer.from(i, 'base64url').length * 8).toBe(144);
    expect(i).not.toBe(r);
    expect(mobileCookieFor(r)).toBe(i);
    expect(parseCookieLine(`I${i}`).cookie).toBe(i);
    // sha256("rendezvous I cookie v1\0" + r), base64url, first 24 characters.
    expect(mobileCookieFor('AAAAAAAAAAAAAAAAAAAAAAAA')).toBe('1Lmc77Ar7QQqQilX6mp1lgr7');
    // Applying it again (a stranger sending R<i>) does not lead back to i.
    expect(mobileCookieFor(i)).not.toBe(i);
  });
});

describe('source keys of the per-source guess limit', () => {
  it.each([
    ['203.0.113.7', '203.0.113.7'],
    ['::ffff:203.0.113.7', '203.0.113.7'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:db8:1:2::9', '2001:db8:1:2::/64'],
    ['2001:0db8:0001:0002:ffff::1', '2001:db8:1:2::/64'],
    ['::1', '0:0:0:0::/64'],
    [undefined, 'unknown'],
    ['', 'unknown'],
    ['not-an-address', 'unknown'],
  ])('%s → %s', (address, key) => {
    expect(sourceKeyOf(address)).toBe(key);
  });
});
