/**
 * No hop for most mobile clients: relays that advertise a direct address (RELAY_DIRECT_HOST) are
 * named by the look-up when they hold the hidden server's parked sockets, so the mobile client
 * pairs on the holder itself (`hops: 0`), while the round-robin front (the NLB) stays the way in
 * for parking and the fallback. A relay killed with SIGKILL stops being named once its heartbeat
 * lapses (RELAY_HEARTBEAT_MS=1000 here: alive for 3 beats), a draining relay once its drain
 * begins, and a relay without a direct address never is.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../client/mobile.js';
import type { RendezvousTriple } from '../../core/triple.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { exposeHiddenServer, type HiddenServer } from '../../index.js';
import { startApiAdapter } from '../../local/api-adapter.js';
import { provisionIdentity } from '../../server/identities.js';
import { startBalancer } from '../support/balancer.js';
import { readAll, startEchoServer } from '../support/net.js';
import { type RelayProcess, spawnRelayProcess } from '../support/relay-process.js';
import { embeddedStore } from '../support/store.js';

type Store = Awaited<ReturnType<typeof embeddedStore>>;
let store: Store;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
let front: Awaited<ReturnType<typeof startBalancer>>;
let api: Awaited<ReturnType<typeof startApiAdapter>>;
let a: RelayProcess;
let b: RelayProcess;
let c: RelayProcess;
const agents: HiddenServer[] = [];
const UUID = 'direct-holder-test';

/** A relay process on the shared store; `direct`: it advertises 127.0.0.1 and its own port. */
function relay(direct: boolean): Promise<RelayProcess> {
  return spawnRelayProcess({
    storeEndpoint: store.endpoint,
    table: store.store.table,
    env: {
      RELAY_HEARTBEAT_MS: '1000',
      ...(direct ? { RELAY_DIRECT_HOST: '127.0.0.1' } : {}),
      AWS_ACCESS_KEY_ID: 'local',
      AWS_SECRET_ACCESS_KEY: 'local',
    },
  });
}

beforeAll(async () => {
  store = await embeddedStore('rendezvous-direct');
  echo = await startEchoServer();
  [a, b, c] = await Promise.all([relay(true), relay(true), relay(false)]);
  // Parking goes through the front; at first it reaches relay A only.
  front = await startBalancer([a.port]);
  const policy = { relayHost: '127.0.0.1', relayPort: front.port };
  api = await startApiAdapter({
    register: makeRegisterHandler(() => ({ store: store.store, policy })),
    lookup: makeLookupHandler(() => ({ store: store.store, direct: {} })),
    port: 0,
  });
}, 120_000);

afterAll(async () => {
  for (const agent of agents) agent.close();
  for (const r of [a, b, c])
    if (r && r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  await api?.close();
  await front?.close();
  await echo?.close();
  await store?.close();
});

async function lookup(): Promise<RendezvousTriple & { fallback?: { host: string; port: number } }> {
  const res = await fetch(`${api.url}/?uuid=${UUID}`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { result: RendezvousTriple }).result;
}

/** Polls the look-up until `cond` holds on its answer (generous: a loaded machine is slow). */
async function lookupUntil(cond: (t: RendezvousTriple) => boolean, ms: number): Promise<RendezvousTriple> {
  const end = Date.now() + ms;
  let last = await lookup();
  while (!cond(last)) {
    if (Date.now() > end) throw new Error(`look-up still answers ${last.host}:${last.port}`);
    await new Promise((r) => setTimeout(r, 100));
    last = await lookup();
  }
  return last;
}

/** The relay ids holding live park records for the uuid's cookie. */
async function holders(): Promise<string[]> {
  const reg = await store.store.getRegistration(UUID);
  if (!reg) return [];
  return (await store.store.listParks('generic', reg.cookie)).map((r) => r.relayId);
}

async function until(cond: () => Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** One rendezvous through the library's `connect`: sends a payload, expects it echoed. */
async function roundTrip(payload: string): Promise<void> {
  const socket = await connect({ api: api.url, uuid: UUID, timeoutMs: 30_000 });
  const back = readAll(socket);
  socket.end(payload);
  expect((await back).toString()).toBe(payload);
}

/** The rendezvous records (`event: rendezvous`) every relay process wrote so far. */
function rendezvousRecords(): Array<{ hops: number; relayId: string }> {
  const out: Array<{ hops: number; relayId: string }> = [];
  for (const r of [a, b, c])
    for (const line of r.output().split('\n'))
      if (line.includes('"event":"rendezvous"')) out.push(JSON.parse(line));
  return out;
}

const idOf = (r: RelayProcess) => r.listening.relayId as string;

describe('the look-up names the relay that holds the hidden server', () => {
  it('names A while A holds it; every mobile pairs at A with no peer link', async () => {
    const id = await provisionIdentity(store.store, { uuid: UUID });
    agents.push(
      exposeHiddenServer({
        api: api.url,
        uuid: UUID,
        secret: id.secret,
        target: { host: '127.0.0.1', port: echo.port },
        pool: 2,
      }),
    );
    await until(async () => (await holders()).includes(idOf(a)), 'the agent to park at A');
    const answer = await lookupUntil((t) => t.port === a.port, 30_000);
    expect(answer.host).toBe('127.0.0.1');
    expect(answer.cookie.startsWith('I')).toBe(true);
    // The front stays named as the way in when the holder cannot be reached.
    expect((answer as { fallback?: unknown }).fallback).toEqual({ host: '127.0.0.1', port: front.port });

    // Each pairing goes where the look-up says: A (the agent re-parks at A through the front).
    for (let i = 0; i < 4; i++) await roundTrip(`direct ${i}`);
    await until(async () => rendezvousRecords().length >= 4, 'the rendezvous records');
    const records = rendezvousRecords();
    expect(records.map((r) => r.hops)).toEqual([0, 0, 0, 0]);
    expect(new Set(records.map((r) => r.relayId))).toEqual(new Set([idOf(a)]));
  }, 120_000);

  it('a relay without a direct address is never named; SIGKILLed A stops being named within 30 s', async () => {
    // The agent's next parks go to C, which advertises no direct address.
    front.targets.splice(0, front.targets.length, c.port);
    a.child.kill('SIGKILL');
    await a.exit;
    const killed = Date.now();
    const answer = await lookupUntil((t) => t.port !== a.port, 30_000);
    expect(Date.now() - killed).toBeLessThan(30_000);
    expect(answer.port).toBe(front.port);
    await until(async () => (await holders()).includes(idOf(c)), 'the agent to park at C');
    // C holds it and has no direct address: the front it is, and the pairing still works.
    expect((await lookup()).port).toBe(front.port);
    await roundTrip('through the front');
    expect((await lookup()).port).toBe(front.port);
  }, 120_000);

  it('names B once B holds it, and stops naming B when B drains', async () => {
    front.targets.splice(0, front.targets.length, b.port);
    c.child.kill('SIGKILL');
    await c.exit;
    await until(async () => (await holders()).includes(idOf(b)), 'the agent to park at B');
    await lookupUntil((t) => t.port === b.port, 30_000);
    b.child.kill('SIGTERM');
    const answer = await lookupUntil((t) => t.port !== b.port, 30_000);
    expect(answer.port).toBe(front.port);
    await b.exit;
  }, 120_000);
});
