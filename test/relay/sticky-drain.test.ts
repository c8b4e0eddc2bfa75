/**
 * The relay our agent parks at directly drains: its `-ERR relay shutting down` sends the agent
 * back through the registration's front, on the same registration (the relay is going, not the
 * cookie), and mobiles reach the hidden server at the relay the front leads to now.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../client/mobile.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { exposeHiddenServer, type HiddenServer } from '../../index.js';
import { startApiAdapter } from '../../local/api-adapter.js';
import { type Relay, startRelay } from '../../relay/server.js';
import { provisionIdentity } from '../../server/identities.js';
import { startBalancer } from '../support/balancer.js';
import { readAll, startEchoServer } from '../support/net.js';
import { embeddedStore } from '../support/store.js';
import { waitFor } from '../support/wait.js';

const UUID = 'sticky-drain-test';
let env: Awaited<ReturnType<typeof embeddedStore>>;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
let front: Awaited<ReturnType<typeof startBalancer>>;
let api: Awaited<ReturnType<typeof startApiAdapter>>;
let a: Relay;
let b: Relay;
let agent: HiddenServer | undefined;

beforeAll(async () => {
  env = await embeddedStore();
  echo = await startEchoServer();
  const opts = { store: env.store, port: 0, host: '127.0.0.1', directHost: '127.0.0.1' };
  [a, b] = await Promise.all([startRelay(opts), startRelay(opts)]);
  // The front leads to A only at first.
  front = await startBalancer([a.address.port]);
  const policy = { relayHost: '127.0.0.1', relayPort: front.port };
  api = await startApiAdapter({
    register: makeRegisterHandler(() => ({ store: env.store, policy })),
    lookup: makeLookupHandler(() => ({ store: env.store, direct: {} })),
    port: 0,
  });
}, 30_000);

afterAll(async () => {
  agent?.close();
  await Promise.all([a?.close(), b?.close()]);
  await api?.close();
  await front?.close();
  await echo?.close();
  await env?.close();
});

async function roundTrip(payload: string): Promise<void> {
  const socket = await connect({ api: api.url, uuid: UUID, timeoutMs: 30_000 });
  const back = readAll(socket);
  socket.end(payload);
  expect((await back).toString()).toBe(payload);
}

const holders = async (cookie: string) =>
  (await env.store.liveParks('generic', cookie)).filter((r) => r.count > 0).map((r) => r.relayId);

describe('the direct relay drains', () => {
  it('the agent parks through the front again, on the same registration', async () => {
    const id = await provisionIdentity(env.store, { uuid: UUID });
    agent = exposeHiddenServer({
      api: api.url,
      uuid: UUID,
      secret: id.secret,
      target: { host: '127.0.0.1', port: echo.port },
      pool: 2,
    });
    await waitFor(async () => (await env.store.getRegistration(UUID)) !== undefined, 30_000, 'registered');
    const cookie = (await env.store.getRegistration(UUID))?.cookie as string;
    await waitFor(async () => (await holders(cookie)).includes(a.relayId), 30_000, 'parked at A');
    await roundTrip('before');

    // The NLB deregisters A and sends new connections to B; A drains.
    front.targets.splice(0, 1, b.address.port);
    const drained = a.drain(1_000);
    await waitFor(async () => (await holders(cookie)).includes(b.relayId), 30_000, 'parked at B');
    await drained;
    await roundTrip('after');
    // A refusal about the relay itself does not cost a registration.
    expect((await env.store.getRegistration(UUID))?.cookie).toBe(cookie);
  }, 90_000);
});
