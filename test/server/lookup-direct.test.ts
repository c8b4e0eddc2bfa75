/**
 * Which relay a look-up names (server/lookup.ts), on a real store with park records and
 * heartbeats written as relays write them: the live holder with a direct address; otherwise the
 * registration's front — for a TLS triple, a holder of another region, a holder without a
 * heartbeat or with a lapsed one, one without a direct address, and whenever direct is off.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lookupHiddenServer, parseDirect } from '../../server/lookup.js';
import { type ParkRecord, Store } from '../../server/store/index.js';
import { countingStoreProxy } from '../support/counting-proxy.js';
import { embeddedStore } from '../support/store.js';

let store: Awaited<ReturnType<typeof embeddedStore>>;
const FRONT = { host: 'nlb.example', port: 8899 };
let n = 0;

beforeAll(async () => {
  store = await embeddedStore('rendezvous-lookup-direct');
}, 60_000);
afterAll(async () => store?.close());

/** A fresh registration (front FRONT, `tlsPort` optional) and its uuid and cookie. */
async function registered(tlsPort?: number): Promise<{ uuid: string; cookie: string }> {
  n++;
  const uuid = `direct-${n}`;
  const cookie = `cookie${n}`.padEnd(24, 'x');
  const now = Math.floor(Date.now() / 1000);
  await store.store.putRegistration({
    uuid,
    cookie,
    cookieScheme: 'split-v1',
    ...FRONT,
    ...(tlsPort ? { tlsPort } : {}),
    registeredAt: now,
    expiresAt: now + 3600,
  });
  return { uuid, cookie };
}

/** A park record of `relayId` for `cookie`, and (unless `beat` is null) its heartbeat, live `beat` ms on. */
async function parked(
  cookie: string,
  relayId: string,
  rec: Partial<ParkRecord>,
  beat: number | null = 60_000,
) {
  await store.store.putPark('generic', cookie, {
    relayId,
    peer: '10.0.0.1:8897',
    count: 1,
    expiresAt: Math.floor(Date.now() / 1000) + 900,
    ...rec,
  });
  if (beat !== null) await store.store.putRelayHeartbeat(relayId, Date.now() + beat);
}

describe('lookupHiddenServer with direct addressing', () => {
  it('names the live holder with a direct address, the front as fallback', async () => {
    const { uuid, cookie } = await registered();
    await parked(cookie, 'relay-a', { direct: '203.0.113.7:8899', region: 'eu-west-1' });
    const t = await lookupHiddenServer(store.store, uuid, Date.now(), { region: 'eu-west-1' });
    expect(t).toEqual({ host: '203.0.113.7', port: 8899, cookie: `I${cookie}`, fallback: FRONT });
    // Off: the front, whatever the records say.
    expect(await lookupHiddenServer(store.store, uuid)).toEqual({ ...FRONT, cookie: `I${cookie}` });
  });

  it('prefers the holder with the most parked sockets', async () => {
    const { uuid, cookie } = await registered();
    await parked(cookie, 'relay-b1', { direct: '203.0.113.8:8899', count: 1 });
    await parked(cookie, 'relay-b2', { direct: '203.0.113.9:8899', count: 5 });
    expect((await lookupHiddenServer(store.store, uuid, Date.now(), {})).host).toBe('203.0.113.9');
  });

  it('keeps the front for TLS, another region, no heartbeat, a lapsed one, no direct address', async () => {
    const cases: Array<[string, number | undefined, Partial<ParkRecord>, number | null]> = [
      ['tls', 8443, { direct: '203.0.113.10:8899' }, 60_000],
      ['region', undefined, { direct: '203.0.113.11:8899', region: 'us-east-1' }, 60_000],
      ['no heartbeat', undefined, { direct: '203.0.113.12:8899' }, null],
      ['lapsed', undefined, { direct: '203.0.113.13:8899' }, -1_000],
      ['no direct', undefined, {}, 60_000],
    ];
    for (const [what, tls, rec, beat] of cases) {
      const { uuid, cookie } = await registered(tls);
      await parked(cookie, `relay-${what}`, rec, beat);
      const t = await lookupHiddenServer(store.store, uuid, Date.now(), { region: 'eu-west-1' });
      expect({ what, host: t.host, port: t.port, fallback: t.fallback }).toEqual({
        what,
        ...FRONT,
        fallback: undefined,
      });
    }
  });

  it('costs one store request per GET when off; with direct, one query and a get per holder more', async () => {
    const { uuid, cookie } = await registered();
    await parked(cookie, 'relay-c1', { direct: '203.0.113.20:8899' });
    await parked(cookie, 'relay-c2', { direct: '203.0.113.21:8899' });
    const proxy = await countingStoreProxy(store.endpoint);
    const counted = new Store({ table: store.store.table, endpoint: proxy.endpoint, region: 'local' });
    try {
      await lookupHiddenServer(counted, uuid);
      expect(Object.fromEntries(proxy.counts)).toEqual({ GetItem: 1 });
      proxy.counts.clear();
      // Sequential: the registration, the park records, then both heartbeats in parallel (3 round trips).
      await lookupHiddenServer(counted, uuid, Date.now(), {});
      expect(Object.fromEntries(proxy.counts)).toEqual({ GetItem: 3, Query: 1 });
    } finally {
      counted.close();
      proxy.close();
    }
  });

  it('parses direct addresses, IPv6 included, and refuses malformed ones', () => {
    expect(parseDirect('203.0.113.7:8899')).toEqual({ host: '203.0.113.7', port: 8899 });
    expect(parseDirect('[2001:db8::1]:8899')).toEqual({ host: '2001:db8::1', port: 8899 });
    expect(parseDirect('relay-3.example.com:443')).toEqual({ host: 'relay-3.example.com', port: 443 });
    for (const bad of ['', ':8899', 'host', 'host:0', 'host:99999', 'host:x'])
      expect(parseDirect(bad)).toBeUndefined();
  });
});
