/**
 * The console's "Live" figures after a relay crashes (SIGKILL: nothing drained, its park records
 * left in the store until their 3-day GC expiry): the dead relay's parks stop showing once its
 * heartbeat lapses, and when a relay comes back on the same public address the agent's parks are
 * listed once, on the new relay — not twice, one of them dead.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type IdentityRow, identityRows } from '../../admin/rows.js';
import { startEchoServer } from '../support/net.js';
import { expose, provision } from '../support/stack.js';
import { embeddedStore } from '../support/store.js';

const CHILD = fileURLToPath(new URL('../support/relay-child.ts', import.meta.url));
const PUBLIC = 'https://relay.example';
let store: Awaited<ReturnType<typeof embeddedStore>>;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
const children: ChildProcess[] = [];

beforeAll(async () => {
  store = await embeddedStore('rendezvous-liveness');
  echo = await startEchoServer();
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await echo?.close();
  await store?.close();
});

/** A relay in its own process (test/support/relay-child.ts) on `httpPort` (0: a free one). */
async function spawnRelay(
  httpPort: number,
): Promise<{ child: ChildProcess; relayId: string; httpPort: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
    env: {
      ...process.env,
      CHILD_STORE_ENDPOINT: store.endpoint,
      CHILD_TABLE: store.store.table,
      CHILD_HTTP_PORT: String(httpPort),
      CHILD_PUBLIC_URL: PUBLIC,
      CHILD_HEARTBEAT_MS: '300',
      AWS_ACCESS_KEY_ID: 'local',
      AWS_SECRET_ACCESS_KEY: 'local',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const line = await new Promise<string>((resolve, reject) => {
    let text = '';
    const t = setTimeout(() => reject(new Error(`relay did not start: ${text}`)), 60_000);
    child.stdout?.on('data', (c: Buffer) => {
      text += c.toString();
      const first = text.split('\n').find((l) => l.startsWith('{"relayId"'));
      if (first) {
        clearTimeout(t);
        resolve(first);
      }
    });
    child.once('exit', (code) => reject(new Error(`relay exited ${code}: ${text}`)));
  });
  return { child, ...(JSON.parse(line) as { relayId: string; httpPort: number }) };
}

const kill = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });

async function row(uuid: string): Promise<IdentityRow> {
  return (await identityRows(store.store)).find((r) => r.uuid === uuid) as IdentityRow;
}

/** Polls `cond` on the console's row until it holds (generous: a loaded machine is slow). */
async function until(uuid: string, what: string, cond: (r: IdentityRow) => boolean): Promise<IdentityRow> {
  const end = Date.now() + 90_000;
  let last = await row(uuid);
  while (!cond(last)) {
    if (Date.now() > end) throw new Error(`${what}: not within 90 s; row: ${JSON.stringify(last.http)}`);
    await new Promise((r) => setTimeout(r, 200));
    last = await row(uuid);
  }
  return last;
}

describe('the console after a relay crash', () => {
  it('drops the dead relay’s parks and lists the address once, on the relay that came back', async () => {
    const id = await provision(store, { uuid: 'liveness-agent' });
    const a = await spawnRelay(0);
    const agent = expose({ apiUrl: '', httpPort: a.httpPort }, id, echo.port, { protocol: 'http' });
    agent.on('error', () => {});
    const first = await until(id.uuid, 'parked on the first relay', (r) => r.http.parked > 0);
    expect(first.http.relays.map((r) => [r.address, r.relayId])).toEqual([[PUBLIC, a.relayId]]);
    expect(first.parkedOn).toEqual([PUBLIC]);

    // A crash, then a new relay process on the same port and public address: the agent re-parks.
    await kill(a.child);
    const b = await spawnRelay(a.httpPort);
    const after = await until(
      id.uuid,
      'listed once, on the new relay',
      (r) => r.http.relays.length === 1 && r.http.relays[0]?.relayId === b.relayId,
    );
    expect(after.http.relays.map((r) => r.address)).toEqual([PUBLIC]);
    expect(after.http.parked).toBe(after.http.relays[0]?.count);
    expect(after.parkedOn).toEqual([PUBLIC]);

    // That one crashes too, and nothing comes back: the identity is offline, not parked.
    await kill(b.child);
    const gone = await until(id.uuid, 'not parked', (r) => r.http.parked === 0);
    expect(gone.http.relays).toEqual([]);
    expect(gone.parkedOn).toEqual([]);
    await agent.close();
  }, 300_000);
});
