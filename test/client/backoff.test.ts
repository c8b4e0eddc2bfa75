/** The agent's back-off (client/backoff.ts): bounds, jitter, Retry-After, and sleeps that stop() ends. */
import { describe, expect, it } from 'vitest';
import { Backoff, backoffDelay, MAX_RETRY_AFTER_MS, Sleeper } from '../../client/backoff.js';

describe('Backoff', () => {
  it('doubles from minMs to maxMs, each wait jittered to half–whole of its base', () => {
    const b = new Backoff({ minMs: 100, maxMs: 1_000 });
    const bases = [100, 200, 400, 800, 1_000, 1_000];
    for (const base of bases) {
      const w = b.next();
      expect(w).toBeGreaterThanOrEqual(base / 2);
      expect(w).toBeLessThanOrEqual(base);
    }
    b.reset();
    expect(b.next()).toBeLessThanOrEqual(100);
  });

  it('a Retry-After is honoured (capped, jittered by at most 250 ms) and still counts as an attempt', () => {
    const b = new Backoff({ minMs: 100, maxMs: 10_000 });
    const w = b.next(3);
    expect(w).toBeGreaterThanOrEqual(3_000);
    expect(w).toBeLessThanOrEqual(3_250);
    expect(b.next(86_400)).toBeLessThanOrEqual(MAX_RETRY_AFTER_MS + 250);
    expect(b.next()).toBeGreaterThanOrEqual(200); // the third attempt: base 400
  });

  it('first() is the shortest wait and counts nothing', () => {
    const b = new Backoff({ minMs: 100, maxMs: 1_000 });
    for (let i = 0; i < 5; i++) expect(b.first()).toBeLessThanOrEqual(100);
    expect(b.next()).toBeLessThanOrEqual(100);
    expect(backoffDelay({ minMs: 100, maxMs: 1_000 }, 10)).toBeGreaterThanOrEqual(500);
  });
});

describe('Sleeper', () => {
  it('stop() ends pending sleeps at once, and later ones return at once', async () => {
    const s = new Sleeper();
    const t0 = Date.now();
    const pending = s.sleep(60_000);
    s.stop();
    await pending;
    await s.sleep(60_000);
    expect(Date.now() - t0).toBeLessThan(1_000);
  });
});
