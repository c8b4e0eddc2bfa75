/**
 * The operator console in headless Chromium (Debian's, driven by playwright-core) against the
 * local stack: create an identity, read its one-time secret and QR code, register with it, see it
 * go online when `expose` parks, disable it after its confirmation (registration refused, parked
 * sockets dropped), delete it after its confirmation. Cross-site requests are refused. The live views — parked count and relay address per
 * protocol, target state, last rendezvous, lockout and unlock, UTC times — appear on an open page
 * by themselves and in `GET /api/servers`. Screenshots are saved for reviewers.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IdentityRow } from '../../admin/rows.js';
import { type AdminConsole, startAdminConsole } from '../../admin/server.js';
import { connect } from '../../client/mobile.js';
import { currentCode } from '../../core/totp.js';
import type { LocalStack } from '../../local/stack.js';
import { untilEvaluated } from '../support/api-event.js';
import { startEchoServer } from '../support/net.js';
import { expose, provision, startStack } from '../support/stack.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = new URL('../artifacts/', import.meta.url);
let stack: LocalStack;
let admin: AdminConsole;
let browser: Browser;
let echo: Awaited<ReturnType<typeof startEchoServer>>;

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error('Chromium not found: apt-get install -y chromium (.ci/run does)');
  stack = await startStack({
    relay: { revalidateMs: 300 },
  });
  admin = await startAdminConsole({ store: stack.store, port: 0, apiUrl: stack.apiUrl });
  echo = await startEchoServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
    ],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await admin?.close();
  await echo?.close();
  await stack?.close();
});

async function putCode(uuid: string, secret: string, wrong = false) {
  const code = currentCode({ secret, digits: 6, step: 30, algorithm: 'SHA1' });
  const sent = wrong ? String((Number(code) + 1) % 1_000_000).padStart(6, '0') : code;
  return fetch(`${stack.apiUrl}/?uuid=${uuid}&response=${sent}`, { method: 'PUT' });
}

const UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;

/** Every value under a key that names a time, anywhere in `v`. */
function timesIn(v: unknown, out: string[] = []): string[] {
  if (Array.isArray(v)) for (const x of v) timesIn(x, out);
  else if (v && typeof v === 'object')
    for (const [k, x] of Object.entries(v)) {
      if (/^(at|createdAt|lastRegistration|lastSeen|until|targetSince|targetReportedAt)$/.test(k))
        out.push(String(x));
      else timesIn(x, out);
    }
  return out;
}

describe('operator console', () => {
  it('creates, shows once, goes online, disables, deletes — in a real browser', async () => {
    const page = await browser.newPage();
    await page.goto(`${admin.url}/`);
    await page.fill('input[name=label]', "Ann's laptop");
    await page.fill('input[name=uuid]', 'console-laptop');
    await page.click('#create');
    const secret = (await page.textContent('#secret'))?.trim() as string;
    expect(secret).toMatch(/^[A-Z2-7]{32}$/);
    expect(await page.locator('#qr svg').count()).toBe(1);
    expect(await page.textContent('#env')).toContain(`RENDEZVOUS_SECRET=${secret}`);
    expect(await page.textContent('#expose')).toContain('rendezvous expose --uuid console-laptop');
    expect(page.url()).not.toContain(secret);

    // The secret works: register through the API, then expose for real.
    expect((await putCode('console-laptop', secret)).status).toBe(200);
    const exposed = expose(stack, { uuid: 'console-laptop', secret }, echo.port);
    await new Promise((r) => exposed.once('parked', r));

    const row = page.locator('tr[data-uuid="console-laptop"]');
    for (let i = 0; i < 50; i++) {
      await page.goto(`${admin.url}/`);
      if ((await row.locator('.status').textContent())?.includes('online')) break;
      await page.waitForTimeout(100);
    }
    expect(await row.locator('.status').textContent()).toContain('online');
    expect(await row.textContent()).toContain("Ann's laptop");
    expect(await page.content()).not.toContain(secret);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: new URL('admin.png', ARTIFACTS).pathname, fullPage: true });

    // Filter.
    await page.goto(`${admin.url}/?q=nomatch`);
    expect(await page.locator('tr[data-uuid="console-laptop"]').count()).toBe(0);
    await page.goto(`${admin.url}/?q=ann`);
    expect(await page.locator('tr[data-uuid="console-laptop"]').count()).toBe(1);

    // Disable: registration refused, parked sockets dropped by the relay.
    exposed.on('error', () => {}); // it will fail to register again, as it should
    await row.locator('button[data-action=disable]').click();
    await page.click('#confirm-disable');
    await page.waitForURL(`${admin.url}/`);
    expect(await row.locator('.status').textContent()).toContain('disabled');
    await new Promise((r) => setTimeout(r, 1_100));
    // The right code of a disabled identity: 403 identity disabled (said only to a right code).
    expect((await putCode('console-laptop', secret)).status).toBe(403);
    // The relay's next check drops the disabled identity's parked sockets with -ERR.
    // Bounded generously: the check runs every 300 ms, but a busy machine stretches it.
    const until = Date.now() + 15_000;
    while (stack.relay.lot.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(stack.relay.lot.size).toBe(0);

    // Delete, with its confirmation page.
    await row.locator('button[data-action=delete]').click();
    await page.click('#confirm-delete');
    await page.waitForURL(`${admin.url}/`);
    expect(await page.locator('tr[data-uuid="console-laptop"]').count()).toBe(0);
    expect(await stack.store.getIdentity('console-laptop')).toBeUndefined();
    await page.close();
  }, 60_000);

  it('rotating a secret shows the new one once; the old one stops working', async () => {
    const page = await browser.newPage();
    await page.goto(`${admin.url}/`);
    await page.fill('input[name=uuid]', 'console-rotate');
    await page.click('#create');
    const first = (await page.textContent('#secret'))?.trim() as string;
    await page.goto(`${admin.url}/`);
    await page.locator('tr[data-uuid="console-rotate"] button[data-action=rotate]').click();
    const second = (await page.textContent('#secret'))?.trim() as string;
    expect(second).not.toBe(first);
    expect((await putCode('console-rotate', first)).status).toBe(401);
    await new Promise((r) => setTimeout(r, 100));
    expect((await putCode('console-rotate', second)).status).toBe(200);
    await page.close();
  }, 30_000);

  it('refuses a cross-origin POST and a POST without the session token', async () => {
    const first = await fetch(`${admin.url}/`);
    const cookie = (first.headers.get('set-cookie') ?? '').split(';')[0] as string;
    const html = await first.text();
    const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1] as string;
    const body = new URLSearchParams({ csrf, uuid: 'evil-made', label: 'x' });
    const foreign = await fetch(`${admin.url}/identities`, {
      method: 'POST',
      headers: { cookie, origin: 'http://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
      body,
    });
    expect(foreign.status).toBe(403);
    const tokenless = await fetch(`${admin.url}/identities`, {
      method: 'POST',
      headers: { cookie, origin: admin.url, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ uuid: 'evil-made' }),
    });
    expect(tokenless.status).toBe(403);
    // DNS rebinding: a page on another name that resolves to 127.0.0.1 is refused by Host.
    const rebound = await new Promise<number>((resolve, reject) => {
      const req = request(`${admin.url}/`, { headers: { host: 'attacker.example:80' } }, (res) => {
        res.resume();
        resolve(res.statusCode as number);
      });
      req.on('error', reject);
      req.end();
    });
    expect(rebound).toBe(403);
    expect(await stack.store.getIdentity('evil-made')).toBeUndefined();
    const same = await fetch(`${admin.url}/identities`, {
      method: 'POST',
      headers: { cookie, origin: admin.url, 'content-type': 'application/x-www-form-urlencoded' },
      body,
    });
    expect(same.status).toBe(200);
  });

  it('shows live truth on an open page: parked where, target, last rendezvous, lockout and unlock', async () => {
    const gen = await provision(stack, { uuid: 'live-gen', label: 'generic agent' });
    const http = await provision(stack, { uuid: 'live-http', label: 'http agent' });
    const locked = await provision(stack, { uuid: 'live-locked', label: 'attacked' });
    const down = await provision(stack, { uuid: 'live-down', label: 'target stopped' });
    // A port nothing listens on: the agent's start-up probe finds its target down and says so on its park line.
    const closed = await startEchoServer();
    const closedPort = closed.port;
    await closed.close();
    const downAgent = expose(stack, down, closedPort);
    const genAgent = expose(stack, gen, echo.port);
    const httpAgent = expose(stack, http, echo.port, { protocol: 'http' });
    await Promise.all([genAgent, httpAgent, downAgent].map((a) => new Promise((r) => a.once('parked', r))));
    const api = async () =>
      ((await (await fetch(`${admin.url}/api/servers`)).json()) as { at: string; servers: IdentityRow[] })
        .servers;
    const row = async (uuid: string) => (await api()).find((r) => r.uuid === uuid) as IdentityRow;
    const until = async (what: string, cond: () => Promise<boolean>) => {
      const end = Date.now() + 15_000;
      while (!(await cond())) {
        if (Date.now() > end) throw new Error(`${what}: not within 15 s`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await until('both parked', async () => (await row('live-gen')).generic.parked === 1);
    await until('http parked', async () => (await row('live-http')).http.parked === 1);

    // The page is loaded once; everything below must reach it without a reload.
    const page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
    await page.goto(`${admin.url}/`);
    await page.evaluate(() => {
      (globalThis as unknown as { loadedOnce: boolean }).loadedOnce = true;
    });
    const genRow = page.locator('tr[data-uuid="live-gen"]');
    const genLive = genRow.locator('.proto[data-protocol=generic]');
    expect(await genLive.locator('.parked').textContent()).toBe(`1 parked on 127.0.0.1:${stack.relayPort}`);
    expect(
      await page.locator('tr[data-uuid="live-http"] .proto[data-protocol=http] .parked').textContent(),
    ).toBe(`1 parked on http://127.0.0.1:${stack.httpPort}`);
    expect(await genLive.locator('.last').textContent()).toContain('no rendezvous recorded');
    expect(await genRow.locator('.status').textContent()).toContain('online');

    // A rendezvous through the relay: 11 bytes each way.
    const mobile = await connect({ api: stack.apiUrl, uuid: gen.uuid });
    const echoed = new Promise<string>((resolve) => {
      let got = '';
      mobile.on('data', (c: Buffer) => {
        got += c.toString();
        if (got.length >= 11) resolve(got);
      });
    });
    mobile.write('hello live\n');
    expect(await echoed).toBe('hello live\n');
    mobile.end();
    await new Promise((r) => mobile.once('close', r));
    const genKey = (await stack.store.getRegistrationRecord(gen.uuid))?.cookie as string;

    // Wrong codes until the identity is locked out; then even the right code is refused.
    const statuses: number[] = [];
    // A guess the store timed out on (503, a busy machine) was not evaluated: it is sent again.
    for (let i = 0; i < 11; i++)
      statuses.push(
        (
          await untilEvaluated(
            () => putCode(locked.uuid, locked.secret, true),
            (r) => r.status === 503,
          )
        ).status,
      );
    expect(statuses).toEqual([...Array(10).fill(401), 429]);
    expect(
      (
        await untilEvaluated(
          () => putCode(locked.uuid, locked.secret),
          (r) => r.status === 503,
        )
      ).status,
    ).toBe(429);

    // The open page shows all of it by itself.
    const downRow = page.locator('tr[data-uuid="live-down"]');
    await downRow.locator('.target[data-target=down]').waitFor({ timeout: 20_000 });
    await page.locator('tr[data-uuid="live-locked"] [data-locked=true]').waitFor({ timeout: 20_000 });
    await genLive.locator('.last time').waitFor({ timeout: 20_000 });
    expect(await page.evaluate(() => (globalThis as unknown as { loadedOnce?: boolean }).loadedOnce)).toBe(
      true,
    );
    expect(await downRow.locator('.status').textContent()).toContain('online, target unreachable');
    expect(await downRow.locator('.proto[data-protocol=generic] .target').textContent()).toBe(
      'target unreachable',
    );
    expect(await genLive.locator('.target').textContent()).toBe('target reachable');
    expect(await genRow.locator('.status').textContent()).not.toContain('unreachable');
    const last = (await genLive.locator('.last').textContent()) as string;
    expect(last).toMatch(
      new RegExp(
        `^last \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ closed, 11 B → hidden, 11 B → mobile, [\\d.]+ m?s on 127\\.0\\.0\\.1:${stack.relayPort}$`,
      ),
    );
    expect(
      await page.locator('tr[data-uuid="live-http"] .proto[data-protocol=http] .target').textContent(),
    ).toBe('target reachable');
    const lockCell = page.locator('tr[data-uuid="live-locked"] .lockout');
    expect(await lockCell.textContent()).toMatch(/^locked out until \S+Z \(10 wrong codes;/);
    // Every time on the page is UTC ISO 8601.
    const times = await page.locator('time').allTextContents();
    expect(times.length).toBeGreaterThan(8);
    for (const t of times) expect(t).toMatch(UTC);

    // The same figures as JSON.
    const servers = await api();
    const g = servers.find((r) => r.uuid === 'live-gen') as IdentityRow;
    expect(g.generic).toMatchObject({
      parked: 1,
      relays: [{ address: `127.0.0.1:${stack.relayPort}`, count: 1, target: 'up' }],
      target: 'up',
      last: {
        end: 'closed',
        bytesToHidden: 11,
        bytesToMobile: 11,
        hops: 0,
        relay: `127.0.0.1:${stack.relayPort}`,
      },
    });
    expect(g.http.parked).toBe(0);
    const h = servers.find((r) => r.uuid === 'live-http') as IdentityRow;
    expect(h.http).toMatchObject({
      parked: 1,
      relays: [{ address: `http://127.0.0.1:${stack.httpPort}`, count: 1 }],
      target: 'up',
    });
    expect((servers.find((r) => r.uuid === 'live-down') as IdentityRow).generic).toMatchObject({
      parked: 1,
      target: 'down',
    });
    const l = servers.find((r) => r.uuid === 'live-locked') as IdentityRow;
    expect(l.lockout).toMatchObject({ locked: true, failures: 10, limit: 10 });
    // No secret and no cookie, in the JSON or on the page.
    for (const hidden of [gen.secret, http.secret, locked.secret, down.secret, genKey]) {
      expect(JSON.stringify(servers)).not.toContain(hidden);
      expect(await page.content()).not.toContain(hidden);
    }
    const jsonTimes = timesIn(servers);
    expect(jsonTimes.length).toBeGreaterThan(8);
    for (const t of jsonTimes) expect(t).toMatch(UTC);

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: new URL('admin-live.png', ARTIFACTS).pathname, fullPage: true });

    // Unlock (a protected POST like the others): the right code registers again.
    await lockCell.locator('button[data-action=unlock]').click();
    await page.waitForURL(`${admin.url}/`);
    expect(await page.locator('tr[data-uuid="live-locked"] [data-locked=false]').count()).toBe(1);
    expect((await row('live-locked')).lockout).toMatchObject({ locked: false, failures: 0 });
    expect((await putCode(locked.uuid, locked.secret)).status).toBe(200);
    await page.close();
  }, 90_000);

  it('refuses an unlock without the session token or from another origin', async () => {
    const now = Math.floor(Date.now() / 1000);
    for (let i = 0; i < 10; i++) await stack.store.reserveAttempt('uuid', 'live-guarded', 10, now, 300);
    const first = await fetch(`${admin.url}/`);
    const cookie = (first.headers.get('set-cookie') ?? '').split(';')[0] as string;
    const csrf = /name="csrf" value="([^"]+)"/.exec(await first.text())?.[1] as string;
    const post = (headers: Record<string, string>, body: URLSearchParams) =>
      fetch(`${admin.url}/identities/live-guarded/unlock`, {
        method: 'POST',
        redirect: 'manual',
        headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body,
      });
    expect((await post({ origin: 'http://evil.example' }, new URLSearchParams({ csrf }))).status).toBe(403);
    expect((await post({ origin: admin.url }, new URLSearchParams())).status).toBe(403);
    expect((await stack.store.getAttempts('uuid', 'live-guarded'))?.count).toBe(10);
    expect((await post({ origin: admin.url }, new URLSearchParams({ csrf }))).status).toBe(303);
    expect(await stack.store.getAttempts('uuid', 'live-guarded')).toBeUndefined();
  });
});
