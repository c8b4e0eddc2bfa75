/**
 * The console at a laptop's width (1280 px) in headless Chromium: the table fits the window and
 * every row's action buttons are on screen, even with long uuids, labels, relay addresses,
 * imported identities, a lockout and a month's usage over its quota; Disable and Delete each ask before they act.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AdminConsole, startAdminConsole } from '../../admin/server.js';
import { ORIGINAL_COMPAT } from '../../core/totp.js';
import { provisionIdentity } from '../../server/identities.js';
import { embeddedStore } from '../support/store.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = new URL('../artifacts/', import.meta.url);
const WIDTH = 1280;
let store: Awaited<ReturnType<typeof embeddedStore>>;
let admin: AdminConsole;
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error('Chromium not found: apt-get install -y chromium (.ci/run does)');
  store = await embeddedStore('rendezvous-layout');
  const s = store.store;
  const now = Date.now();
  // The widest rows a console shows: a full UUID, a long label, a long relay name and region,
  // both protocols' figures, an imported identity's settings, a lockout with its Unlock button.
  const wide = await provisionIdentity(s, {
    uuid: '3f1c2a9e-7b4d-4e8a-9c0f-2d6b8e1a5c37',
    label: 'Build server in the basement rack, second shelf from the top (ask Ann)'.slice(0, 100),
  });
  await provisionIdentity(s, {
    uuid: 'imported-from-the-original-service',
    label: 'imported',
    compat: { ...ORIGINAL_COMPAT, digits: 'original', encoding: 'speakeasy', importedFrom: 'redis' },
  });
  await provisionIdentity(s, { uuid: 'layout-confirm', label: 'asks first' });
  for (let i = 0; i < 10; i++) await s.reserveAttempt('uuid', wide.uuid, 10, Math.floor(now / 1000), 300);
  for (const [relayId, address] of [
    [
      '11111111-aaaa-4bbb-8ccc-000000000001',
      'https://relay-nlb-0123456789abcdef.elb.eu-central-1.amazonaws.com',
    ],
    [
      '11111111-aaaa-4bbb-8ccc-000000000002',
      'https://relay-nlb-fedcba9876543210.elb.ap-southeast-2.amazonaws.com',
    ],
  ] as const)
    await s.putPark('http', wide.uuid, {
      relayId,
      peer: '10.0.123.45:8897',
      count: 3,
      expiresAt: Math.floor(now / 1000) + 600,
      region: 'ap-southeast-2',
      address,
      target: 'down',
      targetSince: now - 60_000,
      targetAt: now,
    });
  await s.putLastRendezvous(wide.uuid, {
    http: {
      at: now - 5_000,
      end: 'target-refused',
      bytesToHidden: 123_456_789,
      bytesToMobile: 987_654_321,
      durationMs: 3_599_000,
      hops: 1,
      relayId: '11111111-aaaa-4bbb-8ccc-000000000001',
      address: 'https://relay-nlb-0123456789abcdef.elb.eu-central-1.amazonaws.com',
      region: 'eu-central-1',
    },
  });
  // This month's bytes with a quota bar (issue 30): the widest month cell.
  await s.addUsage(wide.uuid, {
    generic: {
      bytesToHidden: 123_456_789_012,
      bytesToMobile: 987_654_321_098,
      rendezvous: 4321,
      connectionSeconds: 86_400,
    },
    http: { bytesToHidden: 1, bytesToMobile: 2, rendezvous: 3, connectionSeconds: 4 },
  });
  await s.setLimits(wide.uuid, { monthlyBytes: 1024 ** 4, bytesPerSecond: 1_000_000, maxConcurrent: 8 });
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

describe('the console at 1280 px', () => {
  it('fits the window: no sideways scrolling, every action button on screen', async () => {
    const page = await browser.newPage({ viewport: { width: WIDTH, height: 800 } });
    await page.goto(`${admin.url}/`);
    expect(await page.locator('tr[data-uuid]').count()).toBe(3);
    const scrollWidth = await page.evaluate(
      () =>
        (globalThis as unknown as { document: { documentElement: { scrollWidth: number } } }).document
          .documentElement.scrollWidth,
    );
    expect(scrollWidth).toBeLessThanOrEqual(WIDTH);
    // Measured in one go inside the page: the list's refresh may swap the rows between two calls.
    const boxes = await page.$$eval('#identities tbody button', (els) =>
      els.map((el) => {
        const r = el.getBoundingClientRect();
        return { text: el.textContent, left: r.left, right: r.right, width: r.width };
      }),
    );
    // Rotate, Disable, Delete in every row, and Unlock in the locked one.
    expect(boxes).toHaveLength(10);
    for (const box of boxes) {
      const what = JSON.stringify(box);
      expect(box.width, what).toBeGreaterThan(0);
      expect(box.left, what).toBeGreaterThanOrEqual(0);
      expect(box.right, what).toBeLessThanOrEqual(WIDTH);
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: new URL('admin-1280.png', ARTIFACTS).pathname, fullPage: true });
    await page.close();
  }, 60_000);

  it('Disable asks first: nothing changes until it is confirmed', async () => {
    const page = await browser.newPage({ viewport: { width: WIDTH, height: 800 } });
    await page.goto(`${admin.url}/`);
    await page.locator('tr[data-uuid="layout-confirm"] button[data-action=disable]').click();
    await page.locator('#confirm-disable').waitFor({ timeout: 10_000 });
    expect(await page.textContent('h1')).toContain('layout-confirm');
    expect((await store.store.getIdentity('layout-confirm'))?.disabled).toBeFalsy();
    await page.click('#confirm-disable');
    await page.waitForURL(`${admin.url}/`);
    expect((await store.store.getIdentity('layout-confirm'))?.disabled).toBe(true);
    expect(await page.locator('tr[data-uuid="layout-confirm"] .status').textContent()).toContain('disabled');
    await page.close();
  }, 60_000);

  it('Delete asks first: Cancel keeps the identity', async () => {
    const page = await browser.newPage({ viewport: { width: WIDTH, height: 800 } });
    await page.goto(`${admin.url}/`);
    await page.locator('tr[data-uuid="layout-confirm"] button[data-action=delete]').click();
    await page.locator('#confirm-delete').waitFor({ timeout: 10_000 });
    expect(await store.store.getIdentity('layout-confirm')).toBeDefined();
    await page.click('text=Cancel');
    await page.waitForURL(`${admin.url}/`);
    expect(await store.store.getIdentity('layout-confirm')).toBeDefined();
    await page.close();
  }, 60_000);
});
