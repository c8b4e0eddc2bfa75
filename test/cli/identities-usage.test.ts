/**
 * `rendezvous identities usage` and `identities limits` (issue 30) as real CLI processes against
 * dynalite: one identity's usage adds up to what the relays recorded (today, the month, the last
 * 30 days), the month's listing is sorted by bytes, limits are set, read back and cleared (with a
 * change notice for the relays), and every bad value is one line and exit 2.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { provisionIdentity } from '../../server/identities.js';
import { type IdentityUsage, usageDay } from '../../server/store/index.js';
import { emptyTotals, type UsageTotals } from '../../server/usage-types.js';
import { runCli } from '../support/cli.js';
import { embeddedStore } from '../support/store.js';

let store: Awaited<ReturnType<typeof embeddedStore>>;
let env: Record<string, string>;

beforeAll(async () => {
  store = await embeddedStore('rendezvous-usage-cli');
  env = {
    AWS_ENDPOINT_URL_DYNAMODB: store.endpoint,
    RENDEZVOUS_TABLE: store.store.table,
    AWS_REGION: 'local',
  };
}, 60_000);

afterAll(async () => {
  await store?.close();
});

const ids = (args: string[]) => runCli(['identities', ...args], env, '');
const json = <T>(r: { stdout: Buffer }) => JSON.parse(r.stdout.toString()) as T;

function totals(generic: [number, number, number, number], http: [number, number, number, number]) {
  const t = emptyTotals();
  [t.generic.bytesToHidden, t.generic.bytesToMobile, t.generic.rendezvous, t.generic.connectionSeconds] =
    generic;
  [t.http.bytesToHidden, t.http.bytesToMobile, t.http.rendezvous, t.http.connectionSeconds] = http;
  return t;
}

/**
 * Runs `fn` again when the UTC day changed while it ran (the CLI reads "today" from the clock):
 * twice in a row across midnight cannot happen.
 */
async function withinOneDay(fn: () => Promise<void>) {
  const day = usageDay(Date.now());
  try {
    await fn();
  } catch (err) {
    if (usageDay(Date.now()) === day) throw err;
    await fn();
  }
}

describe('rendezvous identities usage', () => {
  it('<uuid>: today, this month and the last 30 days add up to what the relays recorded (text and --json)', async () => {
    await provisionIdentity(store.store, { uuid: 'use-one', label: 'metered' });
    await withinOneDay(async () => {
      const now = Date.now();
      // Two relays' flushes today, one of them over both protocols.
      const a = totals([1_000, 250_000, 2, 30], [0, 0, 0, 0]);
      const b = totals([500, 4_500, 1, 10], [2_000_000, 8_000_000, 3, 40]);
      await store.store.addUsage('use-one', a, now);
      await store.store.addUsage('use-one', b, now);
      const [text, asJson] = await Promise.all([
        ids(['usage', 'use-one']),
        ids(['usage', 'use-one', '--json']),
      ]);
      expect(asJson.code, asJson.stderr).toBe(0);
      const u = json<
        IdentityUsage & { uuid: string; bytes: { today: number; month: number }; exists: boolean }
      >(asJson);
      const sum: UsageTotals = totals([1_500, 254_500, 3, 40], [2_000_000, 8_000_000, 3, 40]);
      expect(u.today).toEqual(sum);
      expect(u.bytes.today).toBe(1_500 + 254_500 + 10_000_000);
      // The month holds at least today (an earlier test day of this month may add to it: none here).
      expect(u.month).toEqual(sum);
      expect(u.bytes.month).toBe(u.bytes.today);
      expect(u.days).toHaveLength(30);
      expect(u.days[29]).toEqual({ day: usageDay(now), totals: sum });
      expect(u.hours).toEqual([{ hour: new Date(now).getUTCHours(), totals: sum }]);
      expect(u.exists).toBe(true);

      expect(text.code, text.stderr).toBe(0);
      const out = text.stdout.toString();
      expect(out).toMatch(/^uuid\s+use-one$/m);
      // Bytes both ways: generic 256 kB, http 10 MB, 10.3 MB in all, today and this month.
      expect(out).toMatch(/^today\s+generic\s+256 kB\s+1\.5 kB\s+255 kB\s+3\s+40s$/m);
      expect(out).toMatch(/^today\s+http\s+10 MB\s+2 MB\s+8 MB\s+3\s+40s$/m);
      expect(out).toMatch(/^today\s+total\s+10\.3 MB\s+2 MB\s+8\.25 MB\s+6\s+1m 20s$/m);
      expect(out).toMatch(/^this month\s+total\s+10\.3 MB/m);
      // The sparkline: 29 empty days, today the highest.
      expect(out).toContain(`|${' '.repeat(29)}█|`);
      expect(out).toMatch(new RegExp(`^${usageDay(now)}\\s+10\\.3 MB`, 'm'));
    });
  }, 180_000);

  it('an unknown uuid without usage is one line and exit 1; a deleted identity with usage is still shown', async () => {
    await store.store.addUsage('use-deleted', totals([7, 7, 1, 1], [0, 0, 0, 0]));
    const [unknown, deleted] = await Promise.all([
      ids(['usage', 'use-nobody']),
      ids(['usage', 'use-deleted', '--json']),
    ]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('rendezvous: no such identity: use-nobody\n');
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(json<{ exists: boolean; month: UsageTotals }>(deleted)).toMatchObject({ exists: false });
  }, 180_000);

  it('without a uuid: every identity with usage in the month, largest first (text and --json)', async () => {
    const at = (day: string) => Date.parse(`2031-05-${day}T10:00:00Z`);
    await store.store.addUsage('rank-c', totals([10, 0, 1, 1], [0, 0, 0, 0]), at('03'));
    await store.store.addUsage('rank-a', totals([0, 0, 0, 0], [3_000, 3_000, 1, 1]), at('09'));
    await store.store.addUsage('rank-a', totals([1_000, 0, 1, 1], [0, 0, 0, 0]), at('31'));
    await store.store.addUsage('rank-b', totals([5_000, 0, 4, 1], [0, 0, 0, 0]), at('20'));
    // Another month: not in May's listing.
    await store.store.addUsage(
      'rank-c',
      totals([9e9, 0, 1, 1], [0, 0, 0, 0]),
      Date.parse('2031-06-01T00:00:00Z'),
    );
    const [text, asJson, empty] = await Promise.all([
      ids(['usage', '--month', '2031-05']),
      ids(['usage', '--month', '2031-05', '--json']),
      ids(['usage', '--month', '2031-04']),
    ]);
    expect(asJson.code, asJson.stderr).toBe(0);
    const listing = json<{ month: string; identities: { uuid: string; bytes: number }[] }>(asJson);
    expect(listing.month).toBe('2031-05');
    expect(listing.identities.map((r) => [r.uuid, r.bytes])).toEqual([
      ['rank-a', 7_000],
      ['rank-b', 5_000],
      ['rank-c', 10],
    ]);
    expect(text.code, text.stderr).toBe(0);
    const lines = text.stdout.toString().trimEnd().split('\n');
    expect(lines[0]).toMatch(/^UUID\s+BYTES\s+TO HIDDEN\s+TO MOBILE\s+RENDEZVOUS\s+CONNECTED$/);
    expect(lines.slice(1, 4).map((l) => l.split(/\s+/)[0])).toEqual(['rank-a', 'rank-b', 'rank-c']);
    expect(lines[1]).toMatch(/^rank-a\s+7 kB\s+4 kB\s+3 kB\s+2\s+2s$/);
    expect(lines.at(-1)).toBe('3 identities used 12 kB in 2031-05 (UTC)');
    expect(empty.code, empty.stderr).toBe(0);
    expect(empty.stdout.toString()).toBe('no usage in 2031-04\n');
  }, 180_000);

  it('a bad month, or --month with a uuid, is one line and exit 2', async () => {
    const [badMonth, both] = await Promise.all([
      ids(['usage', '--month', '2031-13']),
      ids(['usage', 'use-one', '--month', '2031-05']),
    ]);
    expect(badMonth.code).toBe(2);
    expect(badMonth.stderr).toBe('rendezvous: identities usage: month: YYYY-MM, not 2031-13\n');
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/^rendezvous: identities usage: --month lists every identity/);
    for (const r of [badMonth, both]) expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  }, 180_000);
});

describe('rendezvous identities limits', () => {
  it('sets limits, reads them back, clears one, with a change notice for the relays', async () => {
    await provisionIdentity(store.store, { uuid: 'lim-cli' });
    const before = Date.now();
    const set = await ids([
      'limits',
      'lim-cli',
      '--quota',
      '10GB',
      '--bandwidth',
      '1MB/s',
      '--max-concurrent',
      '3',
      '--json',
    ]);
    expect(set.code, set.stderr).toBe(0);
    const limits = { monthlyBytes: 10e9, bytesPerSecond: 1e6, maxConcurrent: 3 };
    expect(json(set)).toEqual({ uuid: 'lim-cli', limits, monthBytes: 0 });
    expect((await store.store.getIdentity('lim-cli'))?.limits).toEqual(limits);
    expect((await store.store.changesSince(before - 1_000)).map((n) => n.uuid)).toContain('lim-cli');

    await store.store.addUsage('lim-cli', totals([1e9, 5e8, 1, 1], [0, 0, 0, 0]));
    const shown = await ids(['limits', 'lim-cli']);
    expect(shown.code, shown.stderr).toBe(0);
    const out = shown.stdout.toString();
    expect(out).toMatch(/^quota\s+10 GB a month \(1\.5 GB used this month, 15 %\)$/m);
    expect(out).toMatch(/^bandwidth\s+1 MB\/s$/m);
    expect(out).toMatch(/^max concurrent\s+3$/m);
    expect(out).not.toMatch(/^set:/m);

    // `none` clears one; the others stay.
    const cleared = await ids(['limits', 'lim-cli', '--bandwidth', 'none']);
    expect(cleared.code, cleared.stderr).toBe(0);
    expect(cleared.stdout.toString()).toMatch(/^bandwidth\s+none$/m);
    expect(cleared.stdout.toString()).toMatch(/^set: relays apply it/m);
    expect((await store.store.getIdentity('lim-cli'))?.limits).toEqual({
      monthlyBytes: 10e9,
      maxConcurrent: 3,
    });
    const all = await ids(['limits', 'lim-cli', '--quota', 'off', '--max-concurrent', 'none', '--json']);
    expect(json(all)).toMatchObject({ limits: {} });
    expect((await store.store.getIdentity('lim-cli'))?.limits).toBeUndefined();
  }, 180_000);

  it('bad values are one line and exit 2 (nothing changes); an unknown uuid is exit 1', async () => {
    await provisionIdentity(store.store, { uuid: 'lim-bad' });
    await store.store.setLimits('lim-bad', { maxConcurrent: 7 });
    const runs = await Promise.all([
      ids(['limits', 'lim-bad', '--quota', 'lots']),
      ids(['limits', 'lim-bad', '--bandwidth', '100']),
      ids(['limits', 'lim-bad', '--max-concurrent', '0']),
      ids(['limits', 'lim-bad', '--max-concurrent', '2.5']),
      ids(['limits', 'lim-nobody', '--quota', '1GB']),
    ]);
    const [quota, bandwidth, zero, fraction, unknown] = runs;
    expect(quota?.stderr).toBe(
      'rendezvous: identities limits: quota: not a size in bytes: "lots" (e.g. 10GB, 512MiB, 1000), or none\n',
    );
    expect(bandwidth?.stderr).toBe(
      'rendezvous: identities limits: bandwidth: a whole number of bytes per second, at least 1024\n',
    );
    expect(zero?.stderr).toMatch(/^rendezvous: identities limits: max-concurrent: .*above zero/);
    expect(fraction?.stderr).toMatch(/^rendezvous: identities limits: max-concurrent: not a whole number/);
    for (const r of [quota, bandwidth, zero, fraction]) expect(r?.code).toBe(2);
    expect(unknown?.code).toBe(1);
    expect(unknown?.stderr).toBe('rendezvous: no such identity: lim-nobody\n');
    for (const r of runs) expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect((await store.store.getIdentity('lim-bad'))?.limits).toEqual({ maxConcurrent: 7 });
  }, 180_000);
});
