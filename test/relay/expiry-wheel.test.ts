/** The relay's wheel of parked cookies' expiries (relay/revalidate.ts): no store read says when a cookie expires. */
import { describe, expect, it } from 'vitest';
import { ExpiryWheel } from '../../relay/revalidate.js';

describe('ExpiryWheel', () => {
  it('hands out each key once, at the first look after its expiry; removed keys never', () => {
    const t0 = 1_000_000_000_000;
    const wheel = new ExpiryWheel(10_000, t0);
    wheel.add('a', t0 / 1000 + 5);
    wheel.add('b', t0 / 1000 + 25);
    wheel.add('c', t0 / 1000 + 25);
    wheel.add('gone', t0 / 1000 + 5);
    wheel.remove('gone');
    // Already expired when it parked: the next look takes it.
    wheel.add('late', t0 / 1000 - 100);
    expect(wheel.due(t0 + 4_000).sort()).toEqual(['late']);
    expect(wheel.due(t0 + 5_000)).toEqual(['a']);
    expect(wheel.due(t0 + 24_999)).toEqual([]);
    expect(wheel.has('b')).toBe(true);
    expect(wheel.due(t0 + 60_000).sort()).toEqual(['b', 'c']);
    expect(wheel.has('b')).toBe(false);
    expect(wheel.due(t0 + 120_000)).toEqual([]);
  });

  it('a key added again moves to its new expiry', () => {
    const t0 = 2_000_000_000_000;
    const wheel = new ExpiryWheel(1_000, t0);
    wheel.add('k', t0 / 1000 + 2);
    wheel.add('k', t0 / 1000 + 3_600);
    expect(wheel.due(t0 + 10_000)).toEqual([]);
    expect(wheel.due(t0 + 3_600_000)).toEqual(['k']);
  });
});
