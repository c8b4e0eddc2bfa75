/** The spreading of per-key jobs over a period (sweep of parked keys, park-record refreshes). */
import { describe, expect, it } from 'vitest';
import { Rotation } from '../../relay/rotation.js';

describe('Rotation', () => {
  it('hands out every key once per period, in even shares per tick', () => {
    const keys = Array.from({ length: 100 }, (_, i) => `k${i}`);
    const r = new Rotation(60_000, 10_000);
    const ticks = Array.from({ length: 6 }, () => r.take(() => keys));
    expect(ticks.map((t) => t.length)).toEqual([16, 17, 17, 16, 17, 17]);
    expect(new Set(ticks.flat()).size).toBe(100);
    // The next period starts over with the keys of that moment.
    expect(r.take(() => ['new'])).toEqual([]);
  });

  it('a few keys over a long period still get their turn (fractional shares carry over)', () => {
    const r = new Rotation(600_000, 10_000);
    let handed = 0;
    for (let i = 0; i < 60; i++) handed += r.take(() => ['a', 'b', 'c']).length;
    expect(handed).toBe(3);
  });
});
