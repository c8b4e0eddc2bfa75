/**
 * Issue 29: a relay killed with SIGKILL (nothing drained, its park records left in the store)
 * stops being named within 30 s — by the store's `liveParks`, by the other relay's peer dials,
 * and by the console's rows — because readers judge a relay by its heartbeat, not by how long its
 * records live. Two `rendezvous relay` processes on one dynalite, with their default heartbeat.
 */
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { identityRows } from '../../admin/rows.js';
import { codeForStep, timeStep } from '../../core/totp.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import { registerHiddenServer } from '../../server/register.js';
import { dial } from '../support/net.js';
import { type RelayProcess, spawnRelayProcess } from '../support/relay-process.js';
import { embeddedStore } from '../support/store.js';
import { waitFor } from '../support/wait.js';

let env: Awaited<ReturnType<typeof embeddedStore>>;
let a: RelayProcess;
let b: RelayProcess;
const sockets: Socket[] = [];

beforeAll(async () => {
  env = await embeddedStore('rendezvous-dead-relay');
  // A short pair wait: a mobile client with no hidden server anywhere hears -ERR after 2 s.
  const relayEnv = { RELAY_PAIR_WAIT_MS: '2000' };
  const start = () =>
    spawnRelayProcess({ storeEndpoint: env.endpoint, table: env.store.table, env: relayEnv });
  [a, b] = await Promise.all([start(), start()]);
}, 120_000);

afterAll(async () => {
  for (const s of sockets) s.destroy();
  for (const r of [a, b])
    if (r && r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  await env?.close();
});

/** Opens a generic-protocol connection, sends `line`, and collects what comes back. */
async function client(port: number, line: string) {
  const socket = await dial(port);
  sockets.push(socket);
  let text = '';
  socket.on('data', (c: Buffer) => {
    text += c.toString('latin1');
  });
  socket.on('error', () => {});
  socket.write(`${line}\n`);
  return { socket, text: () => text };
}

describe('a relay killed with SIGKILL', () => {
  it('is gone from liveParks, from the other relay’s peer dials and from the console within 30 s', async () => {
    const uuid = 'dead-relay-agent';
    const id = await provisionIdentity(env.store, { uuid });
    const { cookie } = await registerHiddenServer(
      env.store,
      { relayHost: '127.0.0.1', relayPort: a.port },
      uuid,
      codeForStep(id, timeStep(id, Date.now())),
    );
    const key = mobileCookieFor(cookie.slice(1));
    const aId = a.listening.relayId as string;
    await client(a.port, cookie);
    await waitFor(
      async () => (await env.store.listParks('generic', key)).length === 1,
      30_000,
      'parked on A',
    );
    expect((await identityRows(env.store)).find((r) => r.uuid === uuid)?.generic.parked).toBe(1);

    const killedAt = Date.now();
    a.child.kill('SIGKILL');
    await a.exit;
    // A's record stays in the store (a crash deletes nothing); its heartbeat says how long it may
    // still count as alive, written before it died: at most 30 s past the kill.
    expect((await env.store.listParks('generic', key)).map((r) => r.relayId)).toEqual([aId]);
    const beat = (await env.store.relayHeartbeats([aId])).get(aId);
    expect(beat).toBeDefined();
    expect((beat?.liveUntil ?? 0) - killedAt).toBeLessThanOrEqual(30_000);

    await waitFor(async () => (await env.store.liveParks('generic', key)).length === 0, 60_000, 'A not live');
    console.log(`liveParks dropped the dead relay's park ${Date.now() - killedAt} ms after SIGKILL`);
    const row = (await identityRows(env.store)).find((r) => r.uuid === uuid);
    expect(row?.generic).toMatchObject({ parked: 0, relays: [] });
    expect(row?.parkedOn).toEqual([]);

    // Whatever listens on A's old peer address now counts dials to it: B must not dial there.
    const [, port] = (a.listening.peer as string).split(':');
    const dials: Socket[] = [];
    const ghost = createServer((s) => dials.push(s));
    ghost.listen(Number(port), '127.0.0.1');
    await once(ghost, 'listening');
    try {
      const mobile = await client(b.port, `I${key}`);
      await waitFor(() => mobile.text().includes('\n'), 30_000, 'an answer at B');
      expect(mobile.text()).toMatch(/^-ERR /);
      expect(dials.length).toBe(0);

      // The agent parks again, on the live relay: the mobile client pairs there.
      const hidden = await client(b.port, cookie);
      await waitFor(async () => (await env.store.liveParks('generic', key)).length === 1, 30_000, 'on B');
      const again = await client(b.port, `I${key}`);
      await waitFor(
        () => again.text().startsWith('+OK') && hidden.text().startsWith('+OK'),
        30_000,
        'paired',
      );
      expect(dials.length).toBe(0);
    } finally {
      for (const s of dials) s.destroy();
      ghost.close();
    }
  }, 180_000);
});
