/**
 * The operator console in headless Chromium (Debian's, driven by playwright-core) against the
 * local stack: create an identity, read its one-time secret and QR code, register with it, see it
 * go online when `expose` parks, disable it (registration refused, parked sockets dropped), delete
 * it. Cross-site requests are refused. A screenshot is saved for reviewers.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AdminConsole, startAdminConsole } from '../../admin/console.js';
import { exposeHiddenServer, type HiddenServer } from '../../client/hidden-server.js';
import { currentCode } from '../../core/totp.js';
import { type LocalStack, startLocalStack } from '../../local/stack.js';
import { startEchoServer } from '../support/net.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = new URL('../artifacts/', import.meta.url);
let stack: LocalStack;
let admin: AdminConsole;
let browser: Browser;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
let agent: HiddenServer | undefined;

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error('Chromium not found: apt-get install -y chromium (.ci/run does)');
  stack = await startLocalStack({
    apiPort: 0,
    relayPort: 0,
    httpPort: 0,
    storePort: 0,
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
  agent?.close();
  await browser?.close();
  await admin?.close();
  await echo?.close();
  await stack?.close();
});

async function putCode(uuid: string, secret: string) {
  const code = currentCode({ secret, digits: 6, step: 30, algorithm: 'SHA1' });
  return fetch(`${stack.apiUrl}/?uuid=${uuid}&response=${code}`, { method: 'PUT' });
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
    const exposed = exposeHiddenServer({
      api: stack.apiUrl,
      uuid: 'console-laptop',
      secret,
      target: { host: '127.0.0.1', port: echo.port },
    });
    agent = exposed;
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
    await page.waitForURL(`${admin.url}/`);
    expect(await row.locator('.status').textContent()).toContain('disabled');
    await new Promise((r) => setTimeout(r, 1_100));
    expect((await putCode('console-laptop', secret)).status).toBe(401);
    // The relay's next check drops the disabled identity's parked sockets with -ERR.
    const until = Date.now() + 5_000;
    while (stack.relay.lot.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(stack.relay.lot.size).toBe(0);

    // Delete, with its confirmation page.
    await row.locator('button.danger').click();
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
});
