/**
 * A relay whose last parked socket for a key left is not named by the look-up while another relay
 * holds sockets for it: its record (kept PARK_RECORD_LINGER_MS, so peers asking then still queue
 * there) says count 0 soon after, instead of the count it had.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeForStep, timeStep } from '../../core/totp.js';
import { type Relay, startRelay } from '../../relay/server.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import { lookupHiddenServer } from '../../server/lookup.js';
import { registerHiddenServer } from '../../server/register.js';
import { dial } from '../support/net.js';
import { embeddedStore } from '../support/store.js';
import { waitFor } from '../support/wait.js';

const UUID = 'emptied-holder';
let env: Awaited<ReturnType<typeof embeddedStore>>;
let a: Relay;
let b: Relay;
const sockets: Socket[] = [];

beforeAll(async () => {
  env = await embeddedStore();
  const opts = { store: env.store, port: 0, host: '127.0.0.1', directHost: '127.0.0.1' };
  [a, b] = await Promise.all([startRelay(opts), startRelay(opts)]);
}, 30_000);

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all([a?.close(), b?.close()]);
  await env?.close();
});

async function park(relay: Relay, cookie: string): Promise<Socket> {
  const s = await dial(relay.address.port);
  s.on('error', () => {});
  s.write(`${cookie} direct\n`);
  sockets.push(s);
  return s;
}

describe('a relay whose sockets left', () => {
  it('is not named while another relay holds the hidden server', async () => {
    const id = await provisionIdentity(env.store, { uuid: UUID });
    const reg = await registerHiddenServer(
      env.store,
      { relayHost: '127.0.0.1', relayPort: 1 },
      UUID,
      codeForStep(id, timeStep(id, Date.now())),
    );
    const key = mobileCookieFor(reg.cookie.slice(1));
    const count = async (relay: Relay) =>
      (await env.store.liveParks('generic', key)).find((r) => r.relayId === relay.relayId)?.count;
    const onA = [await park(a, reg.cookie), await park(a, reg.cookie)];
    await waitFor(async () => (await count(a)) === 2, 30_000, 'two parks recorded at A');
    await park(b, reg.cookie);
    await waitFor(async () => (await count(b)) === 1, 30_000, 'one park recorded at B');
    expect((await lookupHiddenServer(env.store, UUID, Date.now(), {})).port).toBe(a.address.port);

    // A's pool leaves (the agent moved it to B): while A's record lingers, B is named.
    for (const s of onA) s.destroy();
    let seen: string | undefined;
    await waitFor(
      async () => {
        const lingering = (await count(a)) !== undefined;
        const named = (await lookupHiddenServer(env.store, UUID, Date.now(), {})).port;
        if (!lingering) seen = 'A record gone before B was named';
        else if (named === b.address.port) seen = 'B named while A lingers';
        return seen !== undefined;
      },
      30_000,
      'a verdict',
    );
    expect(seen).toBe('B named while A lingers');
  }, 60_000);
});
