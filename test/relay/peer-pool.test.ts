/**
 * Issue 19: pooled peer links. A relay keeps idle, authenticated links to the relays it pairs
 * through and takes one for the next cross-relay pairing instead of connecting on its critical
 * path; every request on a link is still a signed line with its own nonce; a holder that dies or
 * restarts costs only the links it had (the next pairing connects again); the pool is bounded.
 */
import type { AddressInfo, Server, Socket } from 'node:net';
import { connect, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { startApiAdapter } from '../../local/api-adapter.js';
import { dialPeer } from '../../relay/peer-dial.js';
import { encodePeerHello, PEER_TIMEOUT_MS } from '../../relay/peer-line.js';
import { PeerPool } from '../../relay/peer-pool.js';
import { type Relay, startRelay } from '../../relay/server.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial } from '../support/net.js';
import { embeddedStore } from '../support/store.js';
import { waitFor } from '../support/wait.js';

const SECRET = 'peer-pool-secret';
let c: Awaited<ReturnType<typeof startCluster>>;
const cleanups: Array<() => unknown> = [];

beforeAll(async () => {
  c = await startCluster(1, { secret: SECRET });
});
afterAll(async () => {
  for (const f of cleanups.reverse()) await f();
  await c?.close();
});

let n = 0;
/** Registers a fresh identity through the API; returns its R cookie (without the prefix). */
async function registerCookie(apiUrl: string, store = c.store): Promise<string> {
  const id = await provisionIdentity(store, { uuid: `pool-${Date.now()}-${n++}` });
  const res = await fetch(`${apiUrl}/?uuid=${id.uuid}&response=${currentCode(id)}`, { method: 'PUT' });
  return ((await res.json()) as { result: { cookie: string } }).result.cookie.slice(1);
}

/** Parks `count` raw hidden servers with cookie `r` on `port`; each answers "hello" after +OK. */
async function parkHidden(port: number, r: string, count: number): Promise<Socket[]> {
  const out: Socket[] = [];
  for (let i = 0; i < count; i++) {
    const s = await dial(port);
    s.write(`R${r}\n`);
    s.once('data', () => s.write('hello'));
    s.on('error', () => {});
    out.push(s);
  }
  return out;
}

/** The bytes a paired link reads first. */
const firstBytes = (s: Socket) => new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));

/**
 * A TCP proxy in front of a peer port that counts the connections it accepted; `stop()` makes it
 * accept no more (links it already carries keep working); `breakNext` closes the next link that
 * carries a request as soon as the request arrives (a link gone stale while idle).
 */
async function proxyTo(port: number) {
  const carried = new Set<Socket>();
  const state = { accepted: 0, breakNext: false };
  const server: Server = createServer({ allowHalfOpen: true }, (a) => {
    state.accepted++;
    const b = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    carried.add(a);
    a.on('error', () => b.destroy());
    b.on('error', () => a.destroy());
    a.on('data', (d: Buffer) => {
      if (state.breakNext && /^PEER [RH] /m.test(d.toString('latin1'))) {
        state.breakNext = false;
        a.destroy();
        b.destroy();
        return;
      }
      b.write(d);
    });
    a.on('end', () => b.end());
    b.pipe(a);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    for (const s of carried) s.destroy();
    server.close();
  });
  return {
    peer: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    state,
    // close() stops accepting at once; its callback would wait for the carried links to end.
    stop: () => {
      server.close();
    },
  };
}

describe('pooled peer links', () => {
  it('the next cross-relay pairing takes an idle link, even one idle for seconds: it pairs when no new connection can be made', async () => {
    const relay = c.relays[0] as Relay;
    const proxy = await proxyTo(relay.peerAddress?.port as number);
    const pool = new PeerPool(SECRET);
    cleanups.push(() => pool.close());
    const r = await registerCookie(c.apiUrl);
    const key = mobileCookieFor(r);
    const parked = await parkHidden(relay.address.port, r, 2);
    await waitFor(() => relay.lot.count('generic', key) === 2, 3_000, 'parked');

    // First pairing: nothing pooled yet, so it connects; a link for the next one opens meanwhile.
    const first = await dialPeer({ peer: proxy.peer, secret: SECRET, kind: 'generic', key, waitMs: 0, pool });
    expect(first).toBeDefined();
    expect(await firstBytes(first as Socket)).toBe('hello');
    await waitFor(() => pool.idleTo(proxy.peer) === 1, 3_000, 'an idle link');
    expect(proxy.state.accepted).toBe(2);

    // Idle past the holder's deadline for a first line: the link's hello has kept it open.
    await new Promise((res) => setTimeout(res, PEER_TIMEOUT_MS + 500));
    expect(pool.idleTo(proxy.peer)).toBe(1);
    // No new connection is possible any more: the second pairing must use the pooled link.
    proxy.stop();
    const second = await dialPeer({
      peer: proxy.peer,
      secret: SECRET,
      kind: 'generic',
      key,
      waitMs: 0,
      pool,
    });
    expect(second).toBeDefined();
    expect(await firstBytes(second as Socket)).toBe('hello');
    expect(proxy.state.accepted).toBe(2);
    for (const s of [first, second, ...parked]) s?.destroy();
  });

  it('a link that died while idle: the pairing is asked again on a new connection', async () => {
    const relay = c.relays[0] as Relay;
    const proxy = await proxyTo(relay.peerAddress?.port as number);
    const pool = new PeerPool(SECRET);
    cleanups.push(() => pool.close());
    const r = await registerCookie(c.apiUrl);
    const key = mobileCookieFor(r);
    const parked = await parkHidden(relay.address.port, r, 2);
    await waitFor(() => relay.lot.count('generic', key) === 2, 3_000, 'parked');
    const first = await dialPeer({ peer: proxy.peer, secret: SECRET, kind: 'generic', key, waitMs: 0, pool });
    await waitFor(() => pool.idleTo(proxy.peer) === 1, 3_000, 'an idle link');
    proxy.state.breakNext = true;
    const second = await dialPeer({
      peer: proxy.peer,
      secret: SECRET,
      kind: 'generic',
      key,
      waitMs: 0,
      pool,
    });
    expect(second).toBeDefined();
    expect(await firstBytes(second as Socket)).toBe('hello');
    // Nothing was lost at the holder: both parked sockets went to a pairing, none is left over.
    expect(relay.lot.count('generic', key)).toBe(0);
    for (const s of [first, second, ...parked]) s?.destroy();
  });

  it('stays within its bound of idle links per peer under concurrent pairings', async () => {
    const relay = c.relays[0] as Relay;
    const pool = new PeerPool(SECRET, { maxIdlePerPeer: 3, maxPeers: 4, idleMs: 20_000 });
    cleanups.push(() => pool.close());
    const peer = `127.0.0.1:${relay.peerAddress?.port}`;
    const r = await registerCookie(c.apiUrl);
    const key = mobileCookieFor(r);
    const parked = await parkHidden(relay.address.port, r, 20);
    await waitFor(() => relay.lot.count('generic', key) === 20, 3_000, 'parked');
    const links = await Promise.all(
      Array.from({ length: 20 }, () =>
        dialPeer({ peer, secret: SECRET, kind: 'generic', key, waitMs: 0, pool }),
      ),
    );
    expect(links.every((l) => l !== undefined)).toBe(true);
    await new Promise((res) => setTimeout(res, 300));
    expect(pool.idleTo(peer)).toBeLessThanOrEqual(3);
    expect(pool.idleTo(peer)).toBeGreaterThan(0);
    for (const s of [...links, ...parked]) s?.destroy();
  });

  it('a captured hello cannot be replayed', async () => {
    const port = c.relays[0]?.peerAddress?.port as number;
    const hello = encodePeerHello(SECRET);
    const once = await dial(port);
    once.write(hello);
    const replay = await dial(port);
    replay.write(hello);
    const answer = await firstBytes(replay);
    expect(answer).toBe('-ERR peer line replayed\n');
    // The first stays open, waiting for its request (no answer to a hello).
    expect(once.destroyed).toBe(false);
    once.destroy();
    replay.destroy();
  });
});

describe('a peer relay that restarts', () => {
  it('its pooled links are dropped, and the next cross-relay pairing connects to the new process', async () => {
    const store = await embeddedStore('peer-pool-restart');
    cleanups.push(() => store.close());
    const base = { store: store.store, port: 0, peerPort: 0, clusterSecret: SECRET, pairWaitMs: 2_000 };
    let holder = await startRelay(base);
    const peerPort = holder.peerAddress?.port as number;
    const asker = await startRelay(base);
    cleanups.push(() => asker.close());
    const api = await startApiAdapter({
      register: makeRegisterHandler(() => ({
        store: store.store,
        policy: { relayHost: '127.0.0.1', relayPort: holder.address.port },
      })),
      lookup: makeLookupHandler(() => ({ store: store.store })),
      port: 0,
    });
    cleanups.push(() => api.close());
    const pair = async (holderRelay: Relay) => {
      const r = await registerCookie(api.url, store.store);
      const parked = await parkHidden(holderRelay.address.port, r, 1);
      await waitFor(() => holderRelay.lot.count('generic', mobileCookieFor(r)) === 1, 3_000, 'parked');
      const m = await dial(asker.address.port);
      m.write(`I${mobileCookieFor(r)}\n`);
      let got = '';
      m.on('data', (d: Buffer) => {
        got += d.toString();
      });
      await waitFor(() => got.includes('hello') || m.destroyed, 5_000, 'paired');
      m.destroy();
      for (const s of parked) s.destroy();
      return got;
    };
    expect(await pair(holder)).toBe('+OK\nhello');
    const peer = `127.0.0.1:${peerPort}`;
    await waitFor(() => (asker.peerPool?.idleTo(peer) ?? 0) > 0, 3_000, 'a pooled link');

    await holder.close();
    await waitFor(() => asker.peerPool?.idleTo(peer) === 0, 3_000, 'pooled links dropped');
    holder = await startRelay({ ...base, peerPort });
    cleanups.push(() => holder.close());
    expect(await pair(holder)).toBe('+OK\nhello');
  });
});
