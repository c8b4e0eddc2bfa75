/**
 * Issue 12 items 10 and 11: waiting mobile clients are bounded per source address and in all,
 * unknown names are negative-cached (no store polling for them), limits are logged at a bounded
 * rate, and each hidden server has a cap on live splices and an idle timeout.
 */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RefusalLogGate } from '../../core/log.js';
import { currentCode } from '../../core/totp.js';
import { provisionIdentity } from '../../server/identities.js';
import { METRIC } from '../../server/metrics/catalogue.js';
import { startCluster } from '../support/cluster.js';
import { dial, readAll } from '../support/net.js';
import { waitFor } from '../support/wait.js';

type Cluster = Awaited<ReturnType<typeof startCluster>>;

/** Opens a connection from `local` (127.0.0.x), sends `payload`, resolves the socket. */
function from(local: string, port: number, payload: string): Promise<Socket> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, localAddress: local, allowHalfOpen: true }, () => {
      s.write(payload);
      resolve(s);
    });
    s.on('error', () => {});
  });
}

/** The first bytes (up to the end) and how long they took. */
function answer(s: Socket, waitMs = 5_000): Promise<{ text: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    let text = '';
    const done = () => {
      clearTimeout(t);
      resolve({ text, ms: Date.now() - started });
    };
    const t = setTimeout(done, waitMs);
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    s.once('end', done);
    s.once('close', done);
  });
}

async function registerGeneric(c: Cluster, uuid: string) {
  const id = await provisionIdentity(c.store, { uuid });
  const put = await fetch(`${c.apiUrl}/?uuid=${uuid}&response=${currentCode(id)}`, { method: 'PUT' });
  const r = ((await put.json()) as { result: { cookie: string } }).result.cookie;
  const i = ((await (await fetch(`${c.apiUrl}/?uuid=${uuid}`)).json()) as { result: { cookie: string } })
    .result.cookie;
  return { r, i };
}

describe('waiting mobile clients', () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster(1, {
      // A log budget of 2 records per reason per minute, so the burst below shows the bound.
      relay: {
        pairWaitMs: 3_000,
        maxWaitingPerSource: 3,
        maxWaiting: 5,
        refusalLog: new RefusalLogGate(20, 2),
      },
    });
  });
  afterAll(async () => {
    await c?.close();
  });

  it('are bounded per source address and in all, refused at once with 503/-ERR, and logged once', async () => {
    const http = c.relays[0]?.httpAddress?.port as number;
    const get = (n: string) => `GET /?rendezvous=nobody-${n} HTTP/1.1\r\nHost: r\r\n\r\n`;
    const waiting: Socket[] = [];
    for (let k = 0; k < 3; k++) waiting.push(await from('127.0.0.2', http, get(`a${k}`)));
    await new Promise((r) => setTimeout(r, 200));
    const refusedSource = await answer(await from('127.0.0.2', http, get('a3')));
    expect(refusedSource.text).toMatch(/^HTTP\/1\.1 503 .*Retry-After: /s);
    expect(refusedSource.text).toContain('too many waiting clients from your address');
    expect(refusedSource.ms).toBeLessThan(2_000);
    for (let k = 0; k < 2; k++) waiting.push(await from('127.0.0.3', http, get(`b${k}`)));
    await new Promise((r) => setTimeout(r, 200));
    // Generic clients share the same bound.
    const { i } = await registerGeneric(c, 'limits-wait');
    const refusedTotal = await answer(await from('127.0.0.4', c.relays[0]?.address.port as number, `${i}\n`));
    expect(refusedTotal.text).toBe('-ERR too many waiting clients, try again\n');
    for (let k = 0; k < 5; k++) await answer(await from('127.0.0.5', http, get(`c${k}`)));
    const warnings =
      c.logs[0]?.filter((l) => l.msg === 'refused' && l.fields?.reason === 'too_many_waiting') ?? [];
    // Rate-limited: seven refusals in a burst, two lines (the budget); the metric counts all seven.
    expect(warnings.length).toBe(2);
    expect(warnings[0]?.fields).toMatchObject({ event: 'refusal', protocol: 'http', source: '127.0.0.2' });
    expect(c.relays[0]?.metrics.value(METRIC.relayRefusals, { reason: 'too_many_waiting' })).toBe(7);
    for (const s of waiting) s.destroy();
  });

  it('unknown names are negative-cached: waiting for them does not poll the store', async () => {
    const store = c.store as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    let reads = 0;
    for (const name of ['liveParks', 'getIdentity'] as const) {
      const real = store[name]?.bind(c.store) as (...a: unknown[]) => Promise<unknown>;
      store[name] = (...a: unknown[]) => {
        reads++;
        return real(...a);
      };
    }
    const http = c.relays[0]?.httpAddress?.port as number;
    // The previous test's waiting clients hung up; their waits end at the 3 s pair wait.
    await new Promise((r) => setTimeout(r, 3_200));
    // Four names, each asked by three clients in turn (3 s wait each would poll about 12 times per client).
    const results = await Promise.all(
      [0, 1, 2, 3].map(async (n) => {
        const out = [];
        for (let k = 0; k < 2; k++) {
          const s = await from(`127.0.1.${n + 1}`, http, `GET /?rendezvous=ghost-${n} HTTP/1.1\r\n\r\n`);
          out.push((await answer(s)).text);
        }
        return out;
      }),
    );
    for (const r of results.flat()) expect(r).toMatch(/^HTTP\/1\.1 404 /);
    expect(reads).toBeLessThanOrEqual(8);
  }, 60_000);
});

describe('per hidden server', () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster(1, {
      relay: { pairWaitMs: 2_000, maxSplicesPerUuid: 2, idleTimeoutMs: 800, healthPort: 0 },
    });
  });
  afterAll(async () => {
    await c?.close();
  });

  it('live splices are capped: the excess gets -ERR (generic) and 503 JSON (HTTP) at once', async () => {
    const { r, i } = await registerGeneric(c, 'limits-cap');
    const port = c.relays[0]?.address.port as number;
    const hidden: Socket[] = [];
    for (let k = 0; k < 4; k++) {
      const s = await dial(port);
      s.write(`${r}\n`);
      hidden.push(s);
    }
    await waitFor(() => c.relays[0]?.lot.count('generic', i.slice(1)) === 4, 3_000, 'parked');
    const mobiles = [];
    for (let k = 0; k < 2; k++) {
      const m = await dial(port);
      m.write(`${i}\nping`);
      mobiles.push(m);
      expect((await new Promise<Buffer>((res) => m.once('data', res))).toString(), `mobile ${k}`).toMatch(
        /^\+OK\n/,
      );
    }
    const third = await answer(await from('127.0.0.1', port, `${i}\n`));
    expect(third.text).toBe('-ERR too many live rendezvous for this hidden server\n');
    // HTTP-specific: a cap of 2 too.
    const id = await provisionIdentity(c.store, { uuid: 'limits-cap-http' });
    const http = c.relays[0]?.httpAddress?.port as number;
    const parks: Socket[] = [];
    let cookie = '';
    for (let k = 0; k < 3; k++) {
      const s = await dial(http);
      s.write(
        `CONNECT uuid:limits-cap-http?${cookie ? `cookie=${cookie}` : `response=${currentCode(id)}`} HTTP/1.1\r\n\r\n`,
      );
      const head = await new Promise<string>((res) => s.once('data', (d: Buffer) => res(d.toString())));
      cookie ||= /Rendezvous-Cookie: (\S+)/.exec(head)?.[1] ?? '';
      parks.push(s);
    }
    const httpMobiles = [];
    for (let k = 0; k < 2; k++) {
      httpMobiles.push(await from('127.0.0.1', http, 'GET /?rendezvous=limits-cap-http HTTP/1.1\r\n\r\n'));
    }
    await waitFor(() => c.relays[0]?.lot.count('http', 'limits-cap-http') === 1, 3_000, 'two paired');
    const over = await answer(
      await from('127.0.0.1', http, 'GET /?rendezvous=limits-cap-http HTTP/1.1\r\n\r\n'),
    );
    expect(over.text).toMatch(/^HTTP\/1\.1 503 /);
    expect(over.text).toContain('"diagnostic":"too many live rendezvous for this hidden server"');
    // One generic splice ends: the next mobile pairs again.
    mobiles[0]?.resetAndDestroy();
    await new Promise((res) => setTimeout(res, 200));
    const again = await dial(port);
    again.write(`${i}\n`);
    expect((await new Promise<Buffer>((res) => again.once('data', res))).toString()).toMatch(/^\+OK\n/);
    for (const s of [...hidden, ...mobiles, again, ...parks, ...httpMobiles]) s.destroy();
  });

  it('an idle splice is ended after the idle timeout; a busy one is not', async () => {
    const { r, i } = await registerGeneric(c, 'limits-idle');
    const port = c.relays[0]?.address.port as number;
    await waitFor(() => c.relays[0]?.splices === 0, 5_000, 'no splice');
    const open = async () => {
      const h = await dial(port);
      h.write(`${r}\n`);
      await waitFor(() => (c.relays[0]?.lot.count('generic', i.slice(1)) ?? 0) > 0, 3_000, 'parked');
      const m = await dial(port);
      m.write(`${i}\n`);
      await new Promise((res) => m.once('data', res));
      return { h, m };
    };
    const idle = await open();
    const busy = await open();
    busy.h.resume();
    const ticker = setInterval(() => busy.m.write('x'), 100);
    const idleEnded = readAll(idle.m).catch(() => Buffer.alloc(0));
    await idleEnded;
    await waitFor(() => c.relays[0]?.splices === 1, 3_000, 'the idle splice counted out');
    // The busy one, older than the idle timeout by now, still runs.
    await new Promise((res) => setTimeout(res, 1_000));
    expect(busy.m.destroyed).toBe(false);
    expect(c.relays[0]?.splices).toBe(1);
    expect(c.logs[0]?.some((l) => l.msg === 'idle splice ended')).toBe(true);
    clearInterval(ticker);
    busy.m.destroy();
    busy.h.destroy();
    idle.h.destroy();
    await waitFor(() => c.relays[0]?.splices === 0, 5_000, 'splices back to zero');
  });
});
