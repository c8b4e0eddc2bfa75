/**
 * Usage records and limits in the store (issue 30), against dynalite: what relays add comes back
 * summed per hour, day and month as an operator reads it; concurrent adds lose nothing; the
 * listing is sorted by bytes; limits are set, read back and cleared, with the change notice
 * written before the identity item changes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RendezvousError } from '../../../core/errors.js';
import { provisionIdentity, setIdentityLimits } from '../../../server/identities.js';
import type { Store } from '../../../server/store/index.js';
import { USAGE_TTL_SECONDS } from '../../../server/store/usage.js';
import { emptyTotals, totalBytes } from '../../../server/usage-types.js';
import { embeddedStore } from '../../support/store.js';

let s: Awaited<ReturnType<typeof embeddedStore>>;
let store: Store;

beforeAll(async () => {
  s = await embeddedStore('rendezvous-usage-test');
  store = s.store;
}, 60_000);

afterAll(async () => {
  await s?.close();
});

/** A delta: generic and http bytes both ways, rendezvous and seconds. */
function delta(g: [number, number, number, number], h: [number, number, number, number] = [0, 0, 0, 0]) {
  const t = emptyTotals();
  [t.generic.bytesToHidden, t.generic.bytesToMobile, t.generic.rendezvous, t.generic.connectionSeconds] = g;
  [t.http.bytesToHidden, t.http.bytesToMobile, t.http.rendezvous, t.http.connectionSeconds] = h;
  return t;
}

const at = (iso: string) => Date.parse(iso);
const errorOf = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: RendezvousError) => e,
  );

describe('usage records', () => {
  it('adds from several relays come back as the day, its hours, the month and the last 30 days', async () => {
    const u = 'usage-sum';
    // Two relays flush in the same hour, one later that day, one the day before, one last month.
    await Promise.all([
      store.addUsage(u, delta([100, 1000, 1, 10]), at('2026-03-31T09:10:00Z')),
      store.addUsage(u, delta([5, 7, 1, 3], [40, 60, 2, 4]), at('2026-03-31T09:59:59Z')),
    ]);
    await store.addUsage(u, delta([1, 2, 0, 60]), at('2026-03-31T23:00:00Z'));
    await store.addUsage(u, delta([0, 0, 0, 0], [300, 700, 1, 1]), at('2026-03-30T12:00:00Z'));
    await store.addUsage(u, delta([9_000, 9_000, 1, 1]), at('2026-02-28T12:00:00Z'));

    const now = at('2026-03-31T23:30:00Z');
    const usage = await store.usageOf(u, now);
    expect(usage.today).toEqual(delta([106, 1009, 2, 73], [40, 60, 2, 4]));
    expect(usage.hours).toEqual([
      { hour: 9, totals: delta([105, 1007, 2, 13], [40, 60, 2, 4]) },
      { hour: 23, totals: delta([1, 2, 0, 60]) },
    ]);
    // The month: the 31st and the 30th, not February.
    expect(usage.month).toEqual(delta([106, 1009, 2, 73], [340, 760, 3, 5]));
    expect(totalBytes(usage.month)).toBe(106 + 1009 + 340 + 760);
    expect(await store.monthBytes(u, now)).toBe(totalBytes(usage.month));
    // 30 days, oldest first, today last, zero-filled; February's 28th is 31 days back: outside.
    expect(usage.days).toHaveLength(30);
    expect(usage.days[0]?.day).toBe('2026-03-02');
    expect(usage.days[29]).toEqual({ day: '2026-03-31', totals: usage.today });
    expect(usage.days[28]).toEqual({ day: '2026-03-30', totals: delta([0, 0, 0, 0], [300, 700, 1, 1]) });
    expect(usage.days.slice(0, 28).every((d) => totalBytes(d.totals) === 0)).toBe(true);
    // February counts in February.
    expect(await store.monthBytes(u, at('2026-02-01T00:00:00Z'))).toBe(18_000);
  });

  it('an identity without usage reads as zeros, and an all-zero delta writes nothing', async () => {
    await store.addUsage('usage-idle', emptyTotals(), at('2026-03-31T09:00:00Z'));
    const usage = await store.usageOf('usage-idle', at('2026-03-31T10:00:00Z'));
    expect(usage.today).toEqual(emptyTotals());
    expect(usage.month).toEqual(emptyTotals());
    expect(usage.hours).toEqual([]);
    expect(usage.days.every((d) => totalBytes(d.totals) === 0)).toBe(true);
    expect((await store.usageRanking('2026-03')).map((r) => r.uuid)).not.toContain('usage-idle');
  });

  it('many concurrent adds to one item lose nothing', async () => {
    const when = at('2026-04-15T12:00:00Z');
    await Promise.all(
      Array.from({ length: 40 }, (_, i) => store.addUsage('usage-race', delta([i, 1, 1, 1]), when)),
    );
    const usage = await store.usageOf('usage-race', when);
    expect(usage.today.generic).toEqual({
      bytesToHidden: (39 * 40) / 2,
      bytesToMobile: 40,
      rendezvous: 40,
      connectionSeconds: 40,
    });
  });

  it('a day item expires through the TTL about 400 days after its day', async () => {
    const when = at('2026-05-20T18:00:00Z');
    await store.addUsage('usage-ttl', delta([1, 1, 1, 1]), when);
    // Read through the ranking's scan would not show expiresAt: look at the raw item instead.
    const raw = await (
      store as unknown as { t: { get: (pk: string, sk: string) => Promise<unknown> } }
    ).t.get('usage#usage-ttl', 'day#2026-05-20');
    expect(raw).toMatchObject({ expiresAt: at('2026-05-20T00:00:00Z') / 1000 + USAGE_TTL_SECONDS });
    expect(USAGE_TTL_SECONDS / 86_400).toBe(400);
  });

  it('a negative or non-finite delta is refused and adds nothing', async () => {
    const when = at('2026-06-01T00:00:00Z');
    const bad = delta([5, -1, 0, 0]);
    await expect(store.addUsage('usage-bad', bad, when)).rejects.toThrow(/bytesToMobile/);
    await expect(store.addUsage('usage-bad', delta([Number.NaN, 0, 0, 0]), when)).rejects.toThrow();
    expect(await store.monthBytes('usage-bad', when)).toBe(0);
  });

  it('the ranking lists every identity with usage in the month, by bytes, largest first', async () => {
    const month = '2027-01';
    const add = (u: string, bytes: number, day: string, http = false) =>
      store.addUsage(
        u,
        http ? delta([0, 0, 0, 0], [bytes, 0, 1, 1]) : delta([bytes, 0, 1, 1]),
        at(`${day}T12:00:00Z`),
      );
    await add('rank-small', 10, '2027-01-05');
    await add('rank-big', 600, '2027-01-02');
    await add('rank-big', 600, '2027-01-31', true);
    await add('rank-mid', 1_000, '2027-01-20');
    // Outside the month: neither December nor February count.
    await add('rank-small', 5_000, '2026-12-31');
    await add('rank-small', 5_000, '2027-02-01');
    const ranking = await store.usageRanking(month);
    expect(ranking.map((r) => [r.uuid, totalBytes(r.month)])).toEqual([
      ['rank-big', 1_200],
      ['rank-mid', 1_000],
      ['rank-small', 10],
    ]);
    expect(ranking[0]?.month.http.bytesToHidden).toBe(600);
    expect(ranking[0]?.month.generic.rendezvous).toBe(1);
    expect((await errorOf(store.usageRanking('2027-13')))?.code).toBe('BAD_REQUEST');
  });
});

describe('limits', () => {
  it('are set and read back, replaced, and cleared', async () => {
    const id = await provisionIdentity(store, { uuid: 'limits-set' });
    expect((await store.getIdentity(id.uuid))?.limits).toBeUndefined();
    await setIdentityLimits(store, id.uuid, { monthlyBytes: 10e9, bytesPerSecond: 1e6, maxConcurrent: 3 });
    expect((await store.getIdentity(id.uuid))?.limits).toEqual({
      monthlyBytes: 10e9,
      bytesPerSecond: 1e6,
      maxConcurrent: 3,
    });
    await setIdentityLimits(store, id.uuid, { maxConcurrent: 5 });
    expect((await store.getIdentity(id.uuid))?.limits).toEqual({ maxConcurrent: 5 });
    await setIdentityLimits(store, id.uuid, {});
    expect((await store.getIdentity(id.uuid))?.limits).toBeUndefined();
    await setIdentityLimits(store, id.uuid, { monthlyBytes: 1 });
    await setIdentityLimits(store, id.uuid, undefined);
    const after = await store.getIdentity(id.uuid);
    expect(after?.limits).toBeUndefined();
    // Nothing else about the identity moved.
    expect(after?.secret).toBe(id.secret);
  });

  it('write the change notice before the identity item changes', async () => {
    await provisionIdentity(store, { uuid: 'limits-notice' });
    const before = Date.now();
    // The identity as it stands when the notice is written: read from inside the notice's write.
    const seen: unknown[] = [];
    const changes = (store as unknown as { changes: { note: (u: string, ms?: number) => Promise<void> } })
      .changes;
    const note = changes.note.bind(changes);
    changes.note = async (u, ms) => {
      seen.push((await store.getIdentity(u))?.limits);
      await note(u, ms);
      seen.push((await store.getIdentity(u))?.limits);
    };
    try {
      await store.setLimits('limits-notice', { maxConcurrent: 2 });
    } finally {
      changes.note = note;
    }
    // Both reads around the notice's write saw the identity unchanged: the notice went first.
    expect(seen).toEqual([undefined, undefined]);
    expect((await store.getIdentity('limits-notice'))?.limits).toEqual({ maxConcurrent: 2 });
    const notices = await store.changesSince(before - 1_000);
    expect(notices.map((n) => n.uuid)).toContain('limits-notice');
  });

  it('refuse bad values (naming the field) and unknown identities, changing nothing', async () => {
    await provisionIdentity(store, { uuid: 'limits-bad' });
    await store.setLimits('limits-bad', { maxConcurrent: 4 });
    for (const bad of [
      { monthlyBytes: 0 },
      { monthlyBytes: -5 },
      { monthlyBytes: 1.5 },
      { bytesPerSecond: 100 },
      { maxConcurrent: 0 },
      { maxConcurrent: Number.POSITIVE_INFINITY },
      { speed: 3 },
      { monthlyBytes: '10GB' },
    ]) {
      const err = await errorOf(store.setLimits('limits-bad', bad as never));
      expect(err?.code, JSON.stringify(bad)).toBe('BAD_REQUEST');
      expect(err?.message).toMatch(/monthlyBytes|bytesPerSecond|maxConcurrent|speed/);
    }
    expect((await store.getIdentity('limits-bad'))?.limits).toEqual({ maxConcurrent: 4 });
    const missing = await errorOf(setIdentityLimits(store, 'limits-nobody', { maxConcurrent: 1 }));
    expect(missing?.code).toBe('NOT_FOUND');
    expect(await store.getIdentity('limits-nobody')).toBeUndefined();
  });
});
