/**
 * The store side of the console's live views, counted at the store by a proxy in front of
 * dynalite: an agent's target reports reach its park record only when the state changes; each
 * uuid's last rendezvous costs at most one write per coalescing period however busy it is, and
 * keeps the newest per protocol; an unlock ends a lockout.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryLog } from '../../core/log.js';
import { codeForStep, timeStep } from '../../core/totp.js';
import { LastRendezvousWriter } from '../../relay/last-rendezvous.js';
import { type Relay, startRelay } from '../../relay/server.js';
import type { RendezvousSummary } from '../../relay/telemetry.js';
import { provisionIdentity } from '../../server/identities.js';
import { FAILURE_LIMIT_DEFAULTS } from '../../server/limits.js';
import { registerHiddenServer } from '../../server/register.js';
import { Store } from '../../server/store/index.js';
import { countingStoreProxy } from '../support/counting-proxy.js';
import { dial } from '../support/net.js';
import { embeddedStore } from '../support/store.js';
import { waitFor } from '../support/wait.js';

let env: Awaited<ReturnType<typeof embeddedStore>>;
let proxy: Awaited<ReturnType<typeof countingStoreProxy>>;
let counted: Store;
let relay: Relay;
const sockets: Socket[] = [];

const writes = () =>
  (proxy.counts.get('PutItem') ?? 0) +
  (proxy.counts.get('UpdateItem') ?? 0) +
  (proxy.counts.get('DeleteItem') ?? 0);

beforeAll(async () => {
  env = await embeddedStore();
  proxy = await countingStoreProxy(env.endpoint);
  counted = new Store({ table: env.store.table, endpoint: proxy.endpoint, region: 'local' });
  relay = await startRelay({ store: counted, port: 0, httpPort: 0, region: 'eu-test-1' });
}, 30_000);

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await relay?.close();
  counted?.close();
  proxy?.close();
  await env?.close();
});

function summary(over: Partial<RendezvousSummary>): RendezvousSummary {
  return {
    rid: 'rid-test-000000000',
    protocol: 'generic',
    uuid: 'busy',
    relayId: relay.relayId,
    hops: 0,
    hiddenRelayId: relay.relayId,
    mobileRelayId: relay.relayId,
    bytesToHidden: 0,
    bytesToMobile: 0,
    startedAt: Date.now(),
    durationMs: 5,
    end: 'closed',
    ...over,
  };
}

describe('park records for the console', () => {
  it("carry the relay's public address and region, and the target state, written only when it changes", async () => {
    const policy = { relayHost: '127.0.0.1', relayPort: relay.address.port };
    const id = await provisionIdentity(env.store, { uuid: 'target-agent' });
    const reg = await registerHiddenServer(
      env.store,
      policy,
      id.uuid,
      codeForStep(id, timeStep(id, Date.now())),
    );
    const socket = await dial(relay.address.port);
    sockets.push(socket);
    socket.write(`${reg.cookie}\n`);
    await waitFor(() => relay.lot.size === 1, 10_000, 'parked');
    // The generic key is the mobile cookie (the registration's).
    const key = (await env.store.getRegistrationRecord(id.uuid))?.cookie as string;
    await waitFor(async () => (await env.store.listParks('generic', key)).length === 1, 5_000, 'record');
    let [rec] = await env.store.listParks('generic', key);
    expect(rec?.address).toBe(`127.0.0.1:${relay.address.port}`);
    expect(rec?.region).toBe('eu-test-1');
    expect(rec?.count).toBe(1);
    expect(rec?.target).toBeUndefined();

    proxy.counts.clear();
    relay.records.targetWriteMs = 1_000;
    const target = async () => (await env.store.listParks('generic', key))[0]?.target;
    relay.records.noteTarget('generic', key, 'up');
    await waitFor(async () => (await target()) === 'up', 5_000, 'up');
    expect(writes()).toBe(1);
    // Agents repeat their report on every park: the same state costs nothing.
    for (let i = 0; i < 50; i++) relay.records.noteTarget('generic', key, 'up');
    await new Promise((r) => setTimeout(r, 300));
    expect(writes()).toBe(1);
    // A flapping target (or anyone holding the R cookie) cannot turn reports into writes: 200
    // changes inside one period cost one write at its end, and the newest state wins.
    const before = Date.now();
    for (let i = 0; i < 200; i++) relay.records.noteTarget('generic', key, i % 2 ? 'down' : 'up');
    expect(writes()).toBe(1);
    await waitFor(async () => (await target()) === 'down', 5_000, 'down');
    await new Promise((r) => setTimeout(r, 1_500));
    expect(writes()).toBe(2);
    [rec] = await env.store.listParks('generic', key);
    expect(rec?.targetSince).toBeGreaterThanOrEqual(before);
    expect(rec?.targetAt).toBeGreaterThanOrEqual(before);
    expect(rec?.count).toBe(1);

    // An agent reports a change by re-parking: its old socket closes and the new park line
    // (`target=up`) arrives while the key's count is 0. The new park still writes it.
    socket.destroy();
    await waitFor(() => relay.lot.size === 0, 5_000, 'unparked');
    const again = await dial(relay.address.port);
    sockets.push(again);
    again.write(`${reg.cookie} target=up\n`);
    await waitFor(async () => (await target()) === 'up', 5_000, 'up again after a re-park');
    [rec] = await env.store.listParks('generic', key);
    expect(rec?.count).toBe(1);
  }, 30_000);
});

describe('last rendezvous', () => {
  it('a busy uuid costs one write per period: the first at once, then the newest per protocol', async () => {
    const log = memoryLog('relay');
    const writer = new LastRendezvousWriter({
      store: counted,
      origin: {
        address: 'relay.example.com:8899',
        httpAddress: 'https://relay.example.com',
        region: 'eu-test-1',
      },
      log,
      coalesceMs: 1_000,
    });
    proxy.counts.clear();
    const t0 = Date.now();
    writer.note(summary({ startedAt: t0, bytesToHidden: 1 }));
    await waitFor(
      async () => (await env.store.getLastRendezvous('busy')).generic !== undefined,
      5_000,
      'first',
    );
    expect((await env.store.getLastRendezvous('busy')).generic?.bytesToHidden).toBe(1);
    // A burst inside the period, both protocols, ends out of order.
    for (let i = 2; i <= 100; i++) writer.note(summary({ startedAt: t0 + i, bytesToHidden: i }));
    writer.note(summary({ startedAt: t0 + 50, bytesToHidden: 9_999 })); // older than the newest
    writer.note(
      summary({
        protocol: 'http',
        startedAt: t0 + 7,
        bytesToMobile: 4_096,
        end: 'mobile_reset',
        hops: 1,
        mobileRelayId: 'other',
      }),
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(proxy.counts.get('UpdateItem') ?? 0).toBe(1);
    await waitFor(
      async () => (await env.store.getLastRendezvous('busy')).generic?.bytesToHidden === 100,
      5_000,
      'trailing write',
    );
    expect(proxy.counts.get('UpdateItem') ?? 0).toBe(2);
    const last = await env.store.getLastRendezvous('busy');
    expect(last.generic).toMatchObject({
      at: t0 + 100 + 5,
      end: 'closed',
      bytesToHidden: 100,
      durationMs: 5,
      hops: 0,
      address: 'relay.example.com:8899',
      region: 'eu-test-1',
    });
    expect(last.http).toMatchObject({
      end: 'mobile_reset',
      bytesToMobile: 4_096,
      hops: 1,
      address: 'https://relay.example.com',
      mobileRelayId: 'other',
    });
    // Quiet for a period: nothing more is written.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(proxy.counts.get('UpdateItem') ?? 0).toBe(2);
    // A drain writes what is pending at once.
    writer.note(summary({ startedAt: t0 + 200, bytesToHidden: 200 }));
    writer.note(summary({ startedAt: t0 + 201, bytesToHidden: 201 }));
    await writer.close();
    expect((await env.store.getLastRendezvous('busy')).generic?.bytesToHidden).toBe(201);
    expect(proxy.counts.get('UpdateItem') ?? 0).toBe(4);
    expect(log.records.filter((r) => r.level !== 'INFO')).toEqual([]);
  }, 30_000);

  it('a store that fails loses the figure, not the relay: one warning, no throw', async () => {
    const dead = new Store({ table: env.store.table, endpoint: 'http://127.0.0.1:9', region: 'local' });
    const log = memoryLog('relay');
    const writer = new LastRendezvousWriter({ store: dead, origin: {}, log, coalesceMs: 1_000 });
    writer.note(summary({ uuid: 'lost' }));
    await writer.close(10_000);
    dead.close();
    expect(log.records.map((r) => [r.level, r.msg, r.uuid])).toEqual([
      ['WARN', 'last rendezvous write failed', 'lost'],
    ]);
  }, 30_000);

  it('deleting an identity deletes its last rendezvous', async () => {
    await provisionIdentity(env.store, { uuid: 'gone' });
    await env.store.putLastRendezvous('gone', {
      generic: {
        at: 1,
        end: 'closed',
        bytesToHidden: 1,
        bytesToMobile: 1,
        durationMs: 1,
        hops: 0,
        relayId: 'r',
      },
    });
    expect((await env.store.getLastRendezvous('gone')).generic?.end).toBe('closed');
    await env.store.deleteIdentity('gone');
    expect(await env.store.getLastRendezvous('gone')).toEqual({});
  });
});

describe('lockout', () => {
  it('unlockIdentity resets the uuid’s guess counter; source counters stay', async () => {
    const now = Math.floor(Date.now() / 1000);
    const limit = FAILURE_LIMIT_DEFAULTS.maxFailures;
    for (let i = 0; i < limit; i++) await env.store.reserveAttempt('uuid', 'locked', limit, now, 300);
    await env.store.reserveAttempt('source', '192.0.2.1', 5, now, 300);
    expect(await env.store.reserveAttempt('uuid', 'locked', limit, now, 300)).toMatchObject({ ok: false });
    await env.store.unlockIdentity('locked');
    expect(await env.store.getAttempts('uuid', 'locked')).toBeUndefined();
    expect(await env.store.reserveAttempt('uuid', 'locked', limit, now, 300)).toMatchObject({ ok: true });
    expect((await env.store.getAttempts('source', '192.0.2.1'))?.count).toBe(1);
  });
});
