/**
 * Usage and limits in the operator console (issue 30), in headless Chromium against an embedded
 * store: usage written as relays write it (`store.addUsage`, some of it days back) shows on the
 * identity's page as written — today and this month per protocol, and a 30-day chart whose
 * busiest bar is the busiest day; the list shows this month's bytes with a quota bar and sorts by
 * use; the limits form stores a quota (read back through the store, after a change notice), a bad
 * value is refused on the page with nothing stored, and the form is refused cross-origin or
 * without the session's token; `GET /api/identities/<uuid>/usage` gives the same as JSON.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AdminConsole, startAdminConsole } from '../../admin/server.js';
import type { UsageView } from '../../admin/usage-view.js';
import { provisionIdentity } from '../../server/identities.js';
import { formatBytes } from '../../server/usage-format.js';
import { emptyTotals, type UsageTotals } from '../../server/usage-types.js';
import { embeddedStore } from '../support/store.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = new URL('../artifacts/', import.meta.url);
const DAY = 86_400_000;
let store: Awaited<ReturnType<typeof embeddedStore>>;
let admin: AdminConsole;
let browser: Browser;
const now = Date.now();

/** A delta as a relay flushes it. */
function delta(
  generic: [number, number, number, number],
  http: [number, number, number, number] = [0, 0, 0, 0],
): UsageTotals {
  const t = emptyTotals();
  for (const [k, v] of [
    ['generic', generic],
    ['http', http],
  ] as const) {
    t[k] = { bytesToHidden: v[0], bytesToMobile: v[1], rendezvous: v[2], connectionSeconds: v[3] };
  }
  return t;
}

const dayOf = (ms: number) => new Date(ms).toISOString().slice(0, 10);
const monthOf = (ms: number) => new Date(ms).toISOString().slice(0, 7);

// What is written for 'metered': two flushes today, the busiest day 3 days back, one 20 days back.
const WRITES: [number, UsageTotals][] = [
  [now, delta([1_000, 250_000, 2, 30], [4_096, 40_000, 1, 12])],
  [now, delta([500, 50_000, 1, 15])],
  [now - 3 * DAY, delta([2_000_000, 9_000_000, 7, 600], [1_000, 2_000, 1, 1])],
  [now - 20 * DAY, delta([10, 20, 1, 1])],
];
const sum = (pick: (t: UsageTotals) => number, when: (ms: number) => boolean) =>
  WRITES.filter(([ms]) => when(ms)).reduce((n, [, t]) => n + pick(t), 0);
const isToday = (ms: number) => dayOf(ms) === dayOf(now);
const isThisMonth = (ms: number) => monthOf(ms) === monthOf(now);
const all = (t: UsageTotals) =>
  t.generic.bytesToHidden + t.generic.bytesToMobile + t.http.bytesToHidden + t.http.bytesToMobile;

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error('Chromium not found: apt-get install -y chromium (.ci/run does)');
  store = await embeddedStore('rendezvous-usage-console');
  const s = store.store;
  await provisionIdentity(s, { uuid: 'metered', label: 'busy one' });
  await provisionIdentity(s, { uuid: 'light', label: 'quiet one' });
  await provisionIdentity(s, { uuid: 'limited', label: 'form target' });
  for (const [ms, t] of WRITES) await s.addUsage('metered', t, ms);
  await s.addUsage('light', delta([10, 10, 1, 1]), now);
  admin = await startAdminConsole({ store: s, port: 0 });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await admin?.close();
  await store?.close();
});

/** A session cookie and its token, as a page load gives them. */
async function session(): Promise<{ cookie: string; csrf: string }> {
  const first = await fetch(`${admin.url}/identities/limited/usage`);
  const cookie = (first.headers.get('set-cookie') ?? '').split(';')[0] as string;
  const csrf = /name="csrf" value="([^"]+)"/.exec(await first.text())?.[1] as string;
  return { cookie, csrf };
}

describe('usage and limits in the console', () => {
  it("shows an identity's usage as written: today, this month, 30 daily bars", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${admin.url}/identities/metered/usage`);
    const cell = async (table: string, protocol: string, cls: string, attr: string) =>
      Number(await page.getAttribute(`#${table} tr[data-protocol=${protocol}] .${cls}`, attr));
    for (const [table, when] of [
      ['today', isToday],
      ['month', isThisMonth],
    ] as const) {
      for (const p of ['generic', 'http'] as const) {
        expect(await cell(table, p, 'to-hidden', 'data-bytes')).toBe(sum((t) => t[p].bytesToHidden, when));
        expect(await cell(table, p, 'to-mobile', 'data-bytes')).toBe(sum((t) => t[p].bytesToMobile, when));
        expect(await cell(table, p, 'rendezvous', 'data-count')).toBe(sum((t) => t[p].rendezvous, when));
        expect(await cell(table, p, 'seconds', 'data-seconds')).toBe(
          sum((t) => t[p].connectionSeconds, when),
        );
      }
      // The shown text is the same figure in its unit.
      const toMobile = sum((t) => t.generic.bytesToMobile, when);
      expect(await page.textContent(`#${table} tr[data-protocol=generic] .to-mobile`)).toBe(
        formatBytes(toMobile),
      );
      expect(Number(await page.getAttribute(`#${table} .total`, 'data-bytes'))).toBe(sum(all, when));
      expect(await page.textContent(`#${table} .total`)).toBe(formatBytes(sum(all, when)));
    }

    // The chart: 30 bars, oldest first, ending today; the busiest day's bar is the tallest.
    const bars = await page.$$eval('#days rect.bar', (els) =>
      els.map((el) => ({
        day: el.getAttribute('data-day'),
        bytes: Number(el.getAttribute('data-bytes')),
        height: Number(el.getAttribute('height')),
        title: el.querySelector('title')?.textContent,
      })),
    );
    expect(bars).toHaveLength(30);
    expect(bars[29]?.day).toBe(dayOf(now));
    const busiest = dayOf(now - 3 * DAY);
    const tallest = bars.reduce((a, b) => (b.height > a.height ? b : a));
    expect(tallest.day).toBe(busiest);
    expect(bars.filter((b) => b.height === tallest.height)).toHaveLength(1);
    expect(tallest.bytes).toBe(sum(all, (ms) => dayOf(ms) === busiest));
    expect(tallest.title).toBe(`${busiest}: ${formatBytes(tallest.bytes)}`);
    expect(bars.find((b) => b.day === dayOf(now - 20 * DAY))?.bytes).toBe(30);
    expect(bars.filter((b) => b.bytes === 0).every((b) => b.height === 0)).toBe(true);
    // Accessible: the chart is an image whose label says the busiest day and its bytes.
    expect(await page.getAttribute('#days', 'role')).toBe('img');
    const label = (await page.getAttribute('#days', 'aria-label')) as string;
    expect(label).toContain(`most on ${busiest} (${formatBytes(tallest.bytes)})`);
    // It fits a 1280 px window.
    const scrollWidth = await page.evaluate(
      () =>
        (globalThis as unknown as { document: { documentElement: { scrollWidth: number } } }).document
          .documentElement.scrollWidth,
    );
    expect(scrollWidth).toBeLessThanOrEqual(1280);
    // No script on the page and nothing loaded from elsewhere: it works offline.
    expect(await page.locator('script').count()).toBe(0);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: new URL('admin-usage.png', ARTIFACTS).pathname, fullPage: true });
    await page.close();
  }, 60_000);

  it('the list shows the month in bytes and sorts by use', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${admin.url}/`);
    const monthBytes = Number(await page.getAttribute('tr[data-uuid=metered] .month-bytes', 'data-bytes'));
    expect(monthBytes).toBe(sum(all, isThisMonth));
    expect(await page.textContent('tr[data-uuid=metered] .month-bytes')).toBe(formatBytes(monthBytes));
    expect(Number(await page.getAttribute('tr[data-uuid=limited] .month-bytes', 'data-bytes'))).toBe(0);
    await page.click('#sort-usage');
    await page.waitForURL(/sort=usage/);
    const order = await page.$$eval('#identities tbody tr[data-uuid]', (els) =>
      els.map((el) => el.getAttribute('data-uuid')),
    );
    expect(order).toEqual(['metered', 'light', 'limited']);
    // The page's refresh keeps the order: it fetches its rows with the same `sort`.
    const refresh = await page.waitForRequest(/\/rows\?/, { timeout: 20_000 });
    expect(new URL(refresh.url()).searchParams.get('sort')).toBe('usage');
    const refreshed = await (await fetch(`${admin.url}/rows?q=&sort=usage`)).text();
    expect([...refreshed.matchAll(/<tr data-uuid="([^"]+)"/g)].map((m) => m[1])).toEqual(order);
    await page.close();
  }, 60_000);

  it('the limits form stores a quota after a change notice, and the list shows its bar', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${admin.url}/`);
    await page.click('tr[data-uuid=metered] a.usage-link');
    await page.waitForURL(`${admin.url}/identities/metered/usage`);
    expect(await page.textContent('#limits-now')).toBe('no limits');
    const before = Date.now();
    await page.fill('#limit-quota', '10MB');
    await page.fill('#limit-max-concurrent', '3');
    await page.click('#save-limits');
    await page.waitForURL(/saved=1/);
    expect(await page.textContent('#limits-saved')).toBe('Limits saved.');
    expect((await store.store.getIdentity('metered'))?.limits).toEqual({
      monthlyBytes: 10_000_000,
      maxConcurrent: 3,
    });
    // Relays learn of it through a change notice.
    expect((await store.store.changesSince(before - 1_000)).map((c) => c.uuid)).toContain('metered');
    // The form shows what is stored, exactly: saving it unchanged changes nothing.
    expect(await page.inputValue('#limit-quota')).toBe('10MB');
    expect(await page.inputValue('#limit-bandwidth')).toBe('');

    // The list: this month's bytes against the quota.
    await page.goto(`${admin.url}/`);
    const meter = page.locator('tr[data-uuid=metered] meter.quota');
    expect(Number(await meter.getAttribute('max'))).toBe(10_000_000);
    // Over it (11.3 MB of 10 MB) the list says so in words.
    expect(sum(all, isThisMonth)).toBeGreaterThan(10_000_000);
    expect(await page.textContent('tr[data-uuid=metered] .quota-text')).toBe('over the 10 MB quota');
    expect(await meter.getAttribute('class')).toBe('quota over');
    expect(await page.locator('tr[data-uuid=light] meter').count()).toBe(0);

    // Clearing them.
    await page.goto(`${admin.url}/identities/metered/usage`);
    await page.click('#clear-limits');
    await page.waitForURL(/saved=1/);
    expect(await page.textContent('#limits-now')).toBe('no limits');
    expect((await store.store.getIdentity('metered'))?.limits ?? {}).toEqual({});
    await page.close();
  }, 60_000);

  it('a bad value is refused on the page and nothing is stored', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${admin.url}/identities/limited/usage`);
    const before = Date.now();
    await page.fill('#limit-quota', 'ten gigs');
    await page.fill('#limit-bandwidth', '1MB/s');
    await page.click('#save-limits');
    const error = page.locator('#limits-error');
    await error.waitFor({ timeout: 10_000 });
    expect(await error.textContent()).toMatch(/^Not saved: .*ten gigs/);
    // What was typed stays in the form to be corrected.
    expect(await page.inputValue('#limit-quota')).toBe('ten gigs');
    expect((await store.store.getIdentity('limited'))?.limits).toBeUndefined();
    // A value the store's range check refuses (a bandwidth under 1 KiB/s): the same.
    await page.fill('#limit-quota', '5GB');
    await page.fill('#limit-bandwidth', '100');
    await page.click('#save-limits');
    await page.locator('#limits-error', { hasText: 'bandwidth:' }).waitFor({ timeout: 10_000 });
    expect(await page.textContent('#limits-error')).toBe(
      'Not saved: bandwidth: a whole number of bytes per second, at least 1024',
    );
    expect(await page.inputValue('#limit-bandwidth')).toBe('100');
    expect((await store.store.getIdentity('limited'))?.limits).toBeUndefined();
    // Neither refusal wrote a change notice: the relays have nothing to re-read.
    expect((await store.store.changesSince(before - 1_000)).map((c) => c.uuid)).not.toContain('limited');
    await page.close();
  }, 60_000);

  it('the limits form is refused cross-origin and without the session token', async () => {
    const { cookie, csrf } = await session();
    const post = (headers: Record<string, string>, body: Record<string, string>) =>
      fetch(`${admin.url}/identities/limited/limits`, {
        method: 'POST',
        redirect: 'manual',
        headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: new URLSearchParams(body),
      });
    expect((await post({ origin: 'http://evil.example' }, { csrf, quota: '1GB' })).status).toBe(403);
    expect((await post({ origin: admin.url }, { quota: '1GB' })).status).toBe(403);
    expect((await store.store.getIdentity('limited'))?.limits).toBeUndefined();
    const ok = await post({ origin: admin.url }, { csrf, quota: '1GB', bandwidth: '', 'max-concurrent': '' });
    expect(ok.status).toBe(303);
    expect((await store.store.getIdentity('limited'))?.limits).toEqual({ monthlyBytes: 1e9 });
    expect((await post({ origin: admin.url }, { csrf, quota: '1GB' })).status).toBe(303);
    const unknown = await fetch(`${admin.url}/identities/no-such-one/limits`, {
      method: 'POST',
      headers: { cookie, origin: admin.url, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ csrf, quota: '1GB' }),
    });
    expect(unknown.status).toBe(404);
  });

  it('GET /api/identities/<uuid>/usage gives the same figures as JSON', async () => {
    const res = await fetch(`${admin.url}/api/identities/metered/usage`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('application/json');
    const v = (await res.json()) as UsageView;
    expect(v.uuid).toBe('metered');
    expect(v.monthBytes).toBe(sum(all, isThisMonth));
    expect(v.todayBytes).toBe(sum(all, isToday));
    expect(v.today.generic.bytesToMobile).toBe(sum((t) => t.generic.bytesToMobile, isToday));
    expect(v.month.http.rendezvous).toBe(sum((t) => t.http.rendezvous, isThisMonth));
    expect(v.days).toHaveLength(30);
    expect(v.days.find((d) => d.day === dayOf(now - 3 * DAY))?.totals.generic.bytesToMobile).toBe(9_000_000);
    expect(v.at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(v.limits).toEqual({});
    const missing = await fetch(`${admin.url}/api/identities/no-such-one/usage`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: 'no such identity' });
  });
});
