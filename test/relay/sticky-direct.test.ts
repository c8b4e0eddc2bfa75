/**
 * A pool that converges on one relay: our agent parks through the round-robin front (the NLB),
 * asks its relay for its direct address (the `direct` option), and once a `+OK` names one, parks
 * there directly — so its whole pool sits on one relay, the look-up names that relay, and every
 * mobile client pairs there with no peer link (`hops: 0`). The relay killed, the agent parks
 * through the front again. An original-style parker never sees the option.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../client/mobile.js';
import { currentCode } from '../../core/totp.js';
import type { RendezvousTriple } from '../../core/triple.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { exposeHiddenServer, type HiddenServer } from '../../index.js';
import { startApiAdapter } from '../../local/api-adapter.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import { startBalancer } from '../support/balancer.js';
import { dial, rawExchange, readAll, startEchoServer } from '../support/net.js';
import { type RelayProcess, spawnRelayProcess } from '../support/relay-process.js';
import { embeddedStore } from '../support/store.js';

type Store = Awaited<ReturnType<typeof embeddedStore>>;
let store: Store;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
let front: Awaited<ReturnType<typeof startBalancer>>;
let api: Awaited<ReturnType<typeof startApiAdapter>>;
let a: RelayProcess;
let b: RelayProcess;
const agents: HiddenServer[] = [];
const UUID = 'sticky-direct-test';

function relay(): Promise<RelayProcess> {
  return spawnRelayProcess({
    storeEndpoint: store.endpoint,
    table: store.store.table,
    env: {
      RELAY_HEARTBEAT_MS: '1000',
      RELAY_DIRECT_HOST: '127.0.0.1',
      AWS_ACCESS_KEY_ID: 'local',
      AWS_SECRET_ACCESS_KEY: 'local',
    },
  });
}

beforeAll(async () => {
  store = await embeddedStore('rendezvous-sticky');
  echo = await startEchoServer();
  [a, b] = await Promise.all([relay(), relay()]);
  // The front spreads every connection over both relays in turn, as the NLB does.
  front = await startBalancer([a.port, b.port]);
  const policy = { relayHost: '127.0.0.1', relayPort: front.port };
  api = await startApiAdapter({
    register: makeRegisterHandler(() => ({ store: store.store, policy })),
    lookup: makeLookupHandler(() => ({ store: store.store, direct: {} })),
    port: 0,
  });
}, 120_000);

afterAll(async () => {
  for (const agent of agents) agent.close();
  for (const r of [a, b])
    if (r && r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  await api?.close();
  await front?.close();
  await echo?.close();
  await store?.close();
});

const idOf = (r: RelayProcess) => r.listening.relayId as string;

async function lookup(uuid = UUID): Promise<RendezvousTriple> {
  const res = await fetch(`${api.url}/?uuid=${uuid}`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { result: RendezvousTriple }).result;
}

async function until(cond: () => Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The live relays holding parked sockets of the uuid's cookie. */
async function holders(): Promise<string[]> {
  const reg = await store.store.getRegistration(UUID);
  if (!reg) return [];
  return (await store.store.liveParks('generic', reg.cookie)).map((r) => r.relayId);
}

async function roundTrip(payload: string): Promise<void> {
  const socket = await connect({ api: api.url, uuid: UUID, timeoutMs: 30_000 });
  const back = readAll(socket);
  socket.end(payload);
  expect((await back).toString()).toBe(payload);
}

function rendezvousRecords(): Array<{ hops: number; relayId: string }> {
  const out: Array<{ hops: number; relayId: string }> = [];
  for (const r of [a, b])
    for (const line of r.output().split('\n'))
      if (line.includes('"event":"rendezvous"')) out.push(JSON.parse(line));
  return out;
}

/** A fresh registration's R cookie, through the API as an original agent would get it. */
async function register(uuid: string): Promise<string> {
  const id = await provisionIdentity(store.store, { uuid });
  const reg = await fetch(`${api.url}/?uuid=${uuid}&response=${currentCode(id)}`, { method: 'PUT' });
  return ((await reg.json()) as { result: { cookie: string } }).result.cookie;
}

/** Parks `line` raw at `port`, pairs a raw mobile there, and returns what the hidden side read. */
async function rawPark(port: number, rCookie: string, line: string): Promise<string> {
  const mCookie = mobileCookieFor(rCookie.slice(1));
  const hidden = await dial(port);
  const hiddenSaw = readAll(hidden);
  hidden.write(line);
  await until(async () => (await store.store.liveParks('generic', mCookie)).length > 0, 'the raw park');
  const mobile = rawExchange(port, `I${mCookie}\nping`, 10_000);
  await until(async () => (await store.store.liveParks('generic', mCookie)).length === 0, 'the pairing');
  hidden.end('pong');
  expect((await mobile).text).toBe('+OK\npong');
  return (await hiddenSaw).toString('latin1');
}

describe('a hidden server pool converges on the relay holding it', () => {
  it('an original-style parker gets exactly +OK; one that asks `direct` is told the address', async () => {
    const plain = await register('sticky-plain');
    expect(await rawPark(a.port, plain, `${plain}\n`)).toBe('+OK\nping');
    const asking = await register('sticky-asking');
    expect(await rawPark(a.port, asking, `${asking} direct\n`)).toBe(`+OK direct=127.0.0.1:${a.port}\nping`);
  }, 60_000);

  it('after its first rendezvous the pool sits on one relay, which every mobile reaches locally', async () => {
    const id = await provisionIdentity(store.store, { uuid: UUID });
    agents.push(
      exposeHiddenServer({
        api: api.url,
        uuid: UUID,
        secret: id.secret,
        target: { host: '127.0.0.1', port: echo.port },
        pool: 3,
      }),
    );
    await until(async () => (await holders()).length > 0, 'the agent to park');
    await roundTrip('first');
    // The whole pool moves to the relay that answered the first rendezvous.
    await until(async () => (await holders()).length === 1, 'the pool on one relay');
    const [holderId] = await holders();
    const holder = [a, b].find((r) => idOf(r) === holderId) as RelayProcess;
    await until(async () => (await lookup()).port === holder.port, 'the look-up to name the holder');

    const before = rendezvousRecords().length;
    for (let i = 0; i < 20; i++) await roundTrip(`mobile ${i}`);
    await until(async () => rendezvousRecords().length >= before + 20, 'the rendezvous records');
    const last = rendezvousRecords().slice(before);
    expect(last.map((r) => r.hops)).toEqual(new Array(last.length).fill(0));
    expect(new Set(last.map((r) => r.relayId))).toEqual(new Set([holderId]));
    expect(await holders()).toEqual([holderId]);
  }, 180_000);

  it('the holder killed, the agent parks through the front again and mobiles keep reaching it', async () => {
    const [holderId] = await holders();
    const holder = [a, b].find((r) => idOf(r) === holderId) as RelayProcess;
    const other = holder === a ? b : a;
    holder.child.kill('SIGKILL');
    await until(async () => (await holders()).includes(idOf(other)), 'the agent to park at the other relay');
    await until(async () => (await lookup()).port === other.port, 'the look-up to name the other relay');
    for (let i = 0; i < 3; i++) await roundTrip(`after ${i}`);
  }, 180_000);
});
