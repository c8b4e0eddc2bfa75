/**
 * Store traffic of parked hidden servers at rest (issue 19): counted at the store, by a proxy in
 * front of dynalite. Revocations still reach parked sockets within a round, through the change
 * notices the relay reads once per round instead of re-reading every parked key.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeForStep, timeStep } from '../../core/totp.js';
import { type Relay, startRelay } from '../../relay/server.js';
import { provisionIdentity, setIdentityDisabled } from '../../server/identities.js';
import { registerHiddenServer } from '../../server/register.js';
import { Store } from '../../server/store/index.js';
import { countingStoreProxy } from '../support/counting-proxy.js';
import { dial } from '../support/net.js';
import { embeddedStore } from '../support/store.js';
import { waitFor } from '../support/wait.js';

const KEYS = 20;
const ROUND_MS = 200;
const policy = { relayHost: '127.0.0.1', relayPort: 8899 };

let env: Awaited<ReturnType<typeof embeddedStore>>;
let proxy: Awaited<ReturnType<typeof countingStoreProxy>>;
let relayStore: Store;
let relay: Relay;
const parked: Socket[] = [];

/** Registers `uuid` and returns its `R` cookie (a later call replaces the earlier one). */
async function register(uuid: string, stepOffset = 0): Promise<string> {
  const id = (await env.store.getIdentity(uuid)) ?? (await provisionIdentity(env.store, { uuid }));
  const step = timeStep(id, Date.now()) + stepOffset;
  return (await registerHiddenServer(env.store, policy, uuid, codeForStep(id, step))).cookie;
}

async function park(cookie: string): Promise<{ socket: Socket; text: () => string; ended: Promise<void> }> {
  const socket = await dial(relay.address.port);
  let text = '';
  socket.on('data', (c: Buffer) => {
    text += c.toString();
  });
  // The relay's FIN after its -ERR line (the client side is half-open and does not close by itself).
  const ended = new Promise<void>((r) => socket.once('end', () => r()));
  socket.write(`${cookie}\n`);
  parked.push(socket);
  return { socket, text: () => text, ended };
}

beforeAll(async () => {
  env = await embeddedStore();
  proxy = await countingStoreProxy(env.endpoint);
  relayStore = new Store({ table: env.store.table, endpoint: proxy.endpoint, region: 'local' });
  // Every registration leaves a change notice, whose uuid is re-checked each round while it is
  // young: 5 rounds here (30 s as deployed, with 10 s rounds).
  relay = await startRelay({
    store: relayStore,
    port: 0,
    revalidateMs: ROUND_MS,
    noticeWindowMs: 5 * ROUND_MS,
  });
}, 30_000);

afterAll(async () => {
  for (const s of parked) s.destroy();
  await relay?.close();
  relayStore?.close();
  proxy?.close();
  await env?.close();
});

describe('store traffic at rest', () => {
  it(`${KEYS} parked hidden servers cost the store about one query per round, not a read per key`, async () => {
    for (let i = 0; i < KEYS; i++) await park(await register(`rest-${i}`));
    await waitFor(() => relay.lot.size === KEYS, 10_000, 'all parked');
    // The parks' own cookie checks, first record writes and the registrations' notices (re-checked
    // while young) are changes, not rest.
    await new Promise((r) => setTimeout(r, 1_000 + 5 * ROUND_MS));
    proxy.counts.clear();
    // About 15 rounds: before change notices each round read every parked cookie (2 reads per
    // key, 40 per round here), and park records were rewritten every 20 s.
    await new Promise((r) => setTimeout(r, 15 * ROUND_MS));
    const counts = Object.fromEntries(proxy.counts);
    const queries = counts.Query ?? 0;
    const others = Object.entries(counts)
      .filter(([op]) => op !== 'Query')
      .reduce((a, [, n]) => a + n, 0);
    expect(relay.lot.size).toBe(KEYS);
    // Per-key reads and writes: none at rest (no sweep; the daily record rewrite's share of 3 s is
    // nothing); the heartbeat is one write per relay per 20 s.
    expect(others, JSON.stringify(counts)).toBeLessThanOrEqual(KEYS / 4);
    // One notice query per round (jitter makes rounds as short as 0.8 × ROUND_MS).
    expect(queries).toBeGreaterThan(0);
    expect(queries).toBeLessThanOrEqual(Math.ceil(15 / 0.8) + 2);
  }, 60_000);

  it("a revoked identity's and a replaced cookie's parks are dropped in a round; the others stay", async () => {
    const revoked = await park(await register('rest-revoked'));
    const replaced = await park(await register('rest-replaced'));
    const kept = await park(await register('rest-kept'));
    await waitFor(() => relay.lot.size >= KEYS + 3, 10_000, 'parked');
    await new Promise((r) => setTimeout(r, 3 * ROUND_MS));
    await setIdentityDisabled(env.store, 'rest-revoked', true);
    // A new registration (the next code step) on another relay: only the notice tells this one.
    await register('rest-replaced', 1);
    // There is no sweep: only the change notices can end these.
    await Promise.all([revoked.ended, replaced.ended]);
    expect(revoked.text()).toMatch(/^-ERR unknown cookie/);
    expect(replaced.text()).toBe('-ERR cookie replaced by a newer registration\n');
    await new Promise((r) => setTimeout(r, 3 * ROUND_MS));
    expect(kept.socket.destroyed).toBe(false);
    expect(kept.text()).toBe('');
  }, 60_000);
});
