/**
 * What the console tells the operator to run on the hidden server after creating or rotating an
 * identity: the installed client's command, never `npx rendezvous` (outside the clone that fetches
 * an unrelated registry package, which would run with the secret in its environment), and how to
 * install that client.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AdminConsole, startAdminConsole } from '../../admin/server.js';
import { embeddedStore } from '../support/store.js';

let store: Awaited<ReturnType<typeof embeddedStore>>;
let admin: AdminConsole;

beforeAll(async () => {
  store = await embeddedStore();
  admin = await startAdminConsole({ store: store.store, port: 0, apiUrl: 'http://127.0.0.1:9' });
}, 60_000);

afterAll(async () => {
  await admin?.close();
  await store?.close();
});

/** Posts a form the way the page does (session cookie, token, same origin). */
async function post(path: string, fields: Record<string, string>): Promise<string> {
  const first = await fetch(`${admin.url}/`);
  const cookie = (first.headers.get('set-cookie') ?? '').split(';')[0] as string;
  const csrf = /name="csrf" value="([^"]+)"/.exec(await first.text())?.[1] as string;
  const res = await fetch(`${admin.url}${path}`, {
    method: 'POST',
    headers: { cookie, origin: admin.url, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ csrf, ...fields }),
  });
  expect(res.status).toBe(200);
  return res.text();
}

describe("the console's instructions for the hidden server", () => {
  for (const [what, path] of [
    ['a created identity', '/identities'],
    ['a rotated secret', '/identities/instr-one/rotate'],
  ] as const)
    it(`${what}: the installed \`rendezvous\` command and how to install it, never npx`, async () => {
      const html = await post(path, path === '/identities' ? { uuid: 'instr-one' } : {});
      const text = html.replace(/<[^>]+>/g, '').replace(/&#39;/g, "'");
      expect(text).not.toMatch(/npx rendezvous expose/);
      expect(/<pre id="expose">([^<]*)<\/pre>/.exec(html)?.[1]).toBe(
        'rendezvous expose --uuid instr-one --to 127.0.0.1:22',
      );
      expect(text).toContain('npm install -g @rendezvous-relay/client');
      expect(text).toContain('export RENDEZVOUS_API=http://127.0.0.1:9');
    });
});
