/**
 * Issue 13, first bullet: a socket that closes right after parking never gets a mobile client,
 * the counters of parks and splices return to zero, and a drain with no live splice ends at once.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial, readAll } from '../support/net.js';
import { waitFor } from '../support/wait.js';

type Cluster = Awaited<ReturnType<typeof startCluster>>;

async function health(c: Cluster): Promise<{ parked: number; splices: number }> {
  const res = await fetch(`http://127.0.0.1:${c.relays[0]?.healthAddress?.port}/healthz`);
  return (await res.json()) as { parked: number; splices: number };
}

/** Registers `uuid` through the API: the hidden side's `R…` and the mobile side's `I…` cookie. */
async function register(c: Cluster, uuid: string): Promise<{ r: string; i: string }> {
  const id = await provisionIdentity(c.store, { uuid });
  const put = await fetch(`${c.apiUrl}/?uuid=${uuid}&response=${currentCode(id)}`, { method: 'PUT' });
  const r = ((await put.json()) as { result: { cookie: string } }).result.cookie;
  const get = await fetch(`${c.apiUrl}/?uuid=${uuid}`);
  const i = ((await get.json()) as { result: { cookie: string } }).result.cookie;
  return { r, i };
}

/** Reads until `n` bytes or the end. */
function firstBytes(s: Socket, n: number): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const onData = (c: Buffer) => {
      text += c.toString('latin1');
      if (text.length >= n) done();
    };
    const done = () => {
      s.off('data', onData);
      resolve(text);
    };
    s.on('data', onData);
    s.once('end', done);
    s.once('close', done);
  });
}

describe('a socket that closes right after parking', () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster(1, { relay: { healthPort: 0, pairWaitMs: 2_000 } });
  });
  afterAll(async () => {
    await c?.close();
  });

  it('generic: parks closed at once are never paired; the next mobile gets a live one', async () => {
    const { r, i } = await register(c, 'ends-generic');
    // Ten hidden servers that park and hang up in the same breath, some with FIN, some with RST.
    for (let k = 0; k < 10; k++) {
      const s = await dial(c.relays[0]?.address.port as number);
      s.on('error', () => {});
      if (k % 2 === 0) s.end(`${r}\n`);
      else s.write(`${r}\n`, () => s.resetAndDestroy());
    }
    const live = await dial(c.relays[0]?.address.port as number);
    live.write(`${r}\n`);
    const liveSaw = firstBytes(live, 8);
    for (let k = 0; k < 3; k++) {
      const mobile = await dial(c.relays[0]?.address.port as number);
      mobile.write(`${i}\n`);
      const got = await firstBytes(mobile, 4);
      if (got.startsWith('+OK')) {
        mobile.write('ping');
        expect(await liveSaw).toBe('+OK\nping');
        live.end('pong');
        mobile.end();
        expect((await readAll(mobile)).toString()).toBe('pong');
        break;
      }
      // A mobile client refused while the dead ones are sorted out may try again; never a dead pairing.
      expect(got).toMatch(/^-ERR /);
    }
    await waitFor(
      async () => {
        const h = await health(c);
        return h.parked === 0 && h.splices === 0;
      },
      5_000,
      'counters back to zero',
    );
  });

  it('HTTP-specific: a CONNECT closed at once is never paired; the request reaches a live park', async () => {
    const id = await provisionIdentity(c.store, { uuid: 'ends-http' });
    const port = c.relays[0]?.httpAddress?.port as number;
    const code = currentCode(id);
    const first = await dial(port);
    first.write(`CONNECT uuid:ends-http?response=${code} HTTP/1.1\r\n\r\n`);
    const head = await firstBytes(first, 20);
    const cookie = /Rendezvous-Cookie: (\S+)/.exec(head)?.[1];
    expect(cookie).toBeTruthy();
    // The first park stays live; ten more park with its cookie and hang up at once.
    for (let k = 0; k < 10; k++) {
      const s = await dial(port);
      s.on('error', () => {});
      s.end(`CONNECT uuid:ends-http?cookie=${cookie} HTTP/1.1\r\n\r\n`);
    }
    // Let the dead ones be accepted (or refused) before the mobile comes, so they would be first in line.
    await new Promise((r) => setTimeout(r, 300));
    const live = await dial(port);
    live.write(`CONNECT uuid:ends-http?cookie=${cookie} HTTP/1.1\r\n\r\n`);
    await firstBytes(live, 20);
    first.destroy();
    await waitFor(() => (c.relays[0]?.lot.count('http', 'ends-http') ?? 0) >= 1, 3_000, 'live park');
    const mobile = await dial(port);
    mobile.write('GET /?rendezvous=ends-http HTTP/1.1\r\nHost: r\r\n\r\n');
    const request = await firstBytes(live, 10);
    expect(request).toMatch(/^GET \/\?rendezvous=ends-http HTTP\/1\.1\r\n/);
    live.end('HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n');
    expect((await readAll(mobile)).toString()).toMatch(/^HTTP\/1\.1 204 /);
    mobile.destroy();
    await waitFor(
      async () => {
        const h = await health(c);
        return h.parked === 0 && h.splices === 0;
      },
      5_000,
      'counters back to zero',
    );
  });
});

describe('drain', () => {
  it('with no live splice ends at once, even after parks that closed at once (grace 60 s)', async () => {
    const c = await startCluster(1, { relay: { healthPort: 0, pairWaitMs: 1_000 } });
    try {
      const id = await provisionIdentity(c.store, { uuid: 'ends-drain' });
      const port = c.relays[0]?.httpAddress?.port as number;
      for (let k = 0; k < 5; k++) {
        const s = await dial(port);
        s.on('error', () => {});
        s.end(`CONNECT uuid:ends-drain?response=${currentCode(id)} HTTP/1.1\r\n\r\n`);
      }
      await new Promise((r) => setTimeout(r, 300));
      // A mobile client that keeps its side open, as curl and ssh do while they wait for an answer.
      const mobile = await dial(port);
      mobile.write('GET /?rendezvous=ends-drain HTTP/1.1\r\nHost: r\r\n\r\n');
      const answer = await firstBytes(mobile, 12);
      expect(answer).toMatch(/^HTTP\/1\.1 404 /);
      mobile.destroy();
      await waitFor(async () => (await health(c)).splices === 0, 3_000, 'no live splice');
      const started = Date.now();
      await c.relays[0]?.drain(60_000);
      // The grace is 60 s; with nothing to wait for the drain takes its fixed 100 ms pause and no more.
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await c.close();
    }
  }, 90_000);
});
