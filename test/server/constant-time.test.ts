/**
 * Secrets are compared in constant time: the comparisons on the secret paths go through
 * crypto.timingSafeEqual (a timing measurement would be flaky; this fails when someone swaps in ===).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';

const calls: Array<[Buffer, Buffer]> = [];
vi.mock('node:crypto', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:crypto')>();
  return {
    ...actual,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      calls.push([
        Buffer.from(a.buffer, a.byteOffset, a.byteLength),
        Buffer.from(b.buffer, b.byteOffset, b.byteLength),
      ]);
      return actual.timingSafeEqual(a, b);
    },
  };
});

const { secretsEqual } = await import('../../server/cookies.js');
const { encodePeerLine, verifyPeerLine } = await import('../../relay/peer-line.js');

afterEach(() => {
  calls.length = 0;
});

describe('constant-time comparison', () => {
  it('cookies and cluster secrets are compared with timingSafeEqual, equal or not', () => {
    expect(secretsEqual('cookie-one', 'cookie-one')).toBe(true);
    expect(secretsEqual('cookie-one', 'cookie-two')).toBe(false);
    expect(secretsEqual('short', 'much-longer-value')).toBe(false);
    expect(calls.length).toBe(3);
  });

  it('peer signatures are compared with timingSafeEqual', () => {
    const line = encodePeerLine('s3cret', { kind: 'generic', key: 'abcdef', waitMs: 0 })
      .toString('latin1')
      .trimEnd();
    verifyPeerLine('s3cret', line);
    expect(() => verifyPeerLine('wrong', line)).toThrow();
    expect(calls.length).toBe(2);
  });
});
