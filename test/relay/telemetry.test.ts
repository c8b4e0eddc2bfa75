/**
 * Issue 17, the relay's side: a scripted mix — a generic rendezvous, an HTTP-specific one, one
 * through a peer relay, and a refusal of every kind the relay can be made to answer — and the
 * EXACT log records and metric values it produced, read through the registry and by scraping
 * `GET /metrics` over real HTTP. No secret, TOTP code or cookie appears in any record. A flood
 * of malformed lines is logged within the budget and counted in full.
 */
import { request } from 'node:http';
import { type AddressInfo, createConnection, createServer } from 'node:net';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { jsonLog, type LogRecord, memoryLog, RefusalLogGate } from '../../core/log.js';
import { currentCode } from '../../core/totp.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { startApiAdapter } from '../../local/api-adapter.js';
import { dialPeer } from '../../relay/peer-dial.js';
import { encodePeerLine } from '../../relay/peer-line.js';
import { type Relay, startRelay } from '../../relay/server.js';
import type { RendezvousSummary } from '../../relay/telemetry.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { type ProvisionedIdentity, provisionIdentity } from '../../server/identities.js';
import { METRIC } from '../../server/metrics/catalogue.js';
import { dial, rawExchange } from '../support/net.js';
import { embeddedStore } from '../support/store.js';

const SECRET = 'cluster-secret-for-telemetry';
const any = (t: unknown) => expect.any(t as never);

let store: Awaited<ReturnType<typeof embeddedStore>>;
let api: Awaited<ReturnType<typeof startApiAdapter>>;
let a: Relay;
let b: Relay;
const logA = memoryLog('relay');
const logB = memoryLog('relay');
const endsA: RendezvousSummary[] = [];
const endsB: RendezvousSummary[] = [];
/** Every secret, code and cookie the mix used: none may appear in any record. */
const secrets: string[] = [SECRET];

beforeAll(async () => {
  store = await embeddedStore();
  const common = {
    store: store.store,
    port: 0,
    httpPort: 0,
    peerPort: 0,
    healthPort: 0,
    clusterSecret: SECRET,
    pairWaitMs: 700,
    handshakeTimeoutMs: 600,
    maxHandshakesPerSource: 10_000,
    revalidateMs: 600_000,
    // The exact records of the mix and the drain: usage records (test/relay/metering.test.ts) apart.
    metering: false as const,
  };
  a = await startRelay({ ...common, log: logA, onRendezvousEnd: (s) => endsA.push(s) });
  b = await startRelay({ ...common, log: logB, onRendezvousEnd: (s) => endsB.push(s) });
  const policy = { relayHost: '127.0.0.1', relayPort: a.address.port };
  api = await startApiAdapter({
    register: makeRegisterHandler(() => ({ store: store.store, policy })),
    lookup: makeLookupHandler(() => ({ store: store.store })),
    port: 0,
  });
});

afterAll(async () => {
  await api?.close();
  await a?.close();
  await b?.close();
  await store?.close();
});

async function until(cond: () => boolean | Promise<boolean>, ms = 5_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Provisions and registers `uuid`; returns the R and I cookies (remembered as secrets). */
async function register(uuid: string): Promise<{ id: ProvisionedIdentity; r: string; i: string }> {
  const id = await provisionIdentity(store.store, { uuid });
  const code = currentCode(id);
  secrets.push(id.secret, code);
  const put = await fetch(`${api.url}/?uuid=${uuid}&response=${code}`, { method: 'PUT' });
  const r = ((await put.json()) as { result: { cookie: string } }).result.cookie;
  const get = await fetch(`${api.url}/?uuid=${uuid}`);
  const i = ((await get.json()) as { result: { cookie: string } }).result.cookie;
  secrets.push(r, i, r.slice(1), i.slice(1));
  return { id, r, i };
}

/** Collects what a socket receives; `text()` is everything so far. */
function collect(s: import('node:net').Socket) {
  const chunks: Buffer[] = [];
  let ended = false;
  s.on('data', (c: Buffer) => chunks.push(c));
  s.on('end', () => {
    ended = true;
  });
  return {
    text: () => Buffer.concat(chunks).toString('latin1'),
    ended: () => ended,
  };
}

/** Parks an HTTP-specific hidden server (raw CONNECT) on `port`; resolves once the 200 arrived. */
async function connectPark(port: number, target: string, extra = '') {
  const s = await dial(port);
  const seen = collect(s);
  s.write(`CONNECT ${target} HTTP/1.1\r\nHost: relay\r\n${extra}\r\n`);
  await until(() => seen.text().includes('\r\n\r\n') || seen.ended());
  const head = seen.text();
  const cookie = /Rendezvous-Cookie: (\S+)/.exec(head)?.[1];
  if (cookie) secrets.push(cookie);
  return { s, head, seen, headLength: head.length };
}

const refusal = (
  reason: string,
  protocol: string,
  uuid?: string,
  level: 'WARN' | 'INFO' = 'WARN',
  extra: Record<string, unknown> = {},
) => ({
  time: any(String),
  level,
  service: 'relay',
  msg: 'refused',
  event: 'refusal',
  reason,
  protocol,
  ...(uuid ? { uuid } : {}),
  source: '127.0.0.1',
  ...extra,
});

const ofKind = (records: LogRecord[]) =>
  records.filter((r) => r.event === 'refusal' || r.event === 'rendezvous');

/** `GET path` on a health port: status, content-type, body. */
function scrape(port: number, path: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }),
      );
    })
      .on('error', reject)
      .end();
  });
}

/** Prometheus text → { 'name{a="x",b="y"}': value } (comments skipped). */
function parseProm(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out[line.slice(0, at)] = Number(line.slice(at + 1));
  }
  return out;
}

describe('relay telemetry: a scripted mix, its exact records and metrics', () => {
  const expectedA: object[] = [];
  const expectedB: object[] = [];
  let genericRid = '';
  let peerRid = '';
  let httpRid = '';
  let httpHeadToHidden = 0;
  let httpAnswer = '';

  it('a generic rendezvous with the opt-in options: +OK rid= to both, target reported, one record', async () => {
    const spy = vi.spyOn(a.records, 'noteTarget');
    const { r, i } = await register('tel-generic');
    const hidden = await dial(a.address.port);
    const hiddenSaw = collect(hidden);
    hidden.write(`${r} rid target=up\n`);
    await until(() => a.lot.count('generic', mobileCookieFor(r.slice(1))) === 1);
    expect(spy).toHaveBeenCalledWith('generic', mobileCookieFor(r.slice(1)), 'up');
    const mobile = await dial(a.address.port);
    const mobileSaw = collect(mobile);
    mobile.write(`${i} rid\nhello`);
    await until(() => hiddenSaw.text().endsWith('hello'));
    genericRid = /^\+OK rid=([A-Za-z0-9_-]{16})\n/.exec(hiddenSaw.text())?.[1] ?? '';
    expect(hiddenSaw.text()).toBe(`+OK rid=${genericRid}\nhello`);
    hidden.end('world!');
    await until(() => mobileSaw.ended());
    expect(mobileSaw.text()).toBe(`+OK rid=${genericRid}\nworld!`);
    mobile.end();
    await until(() => endsA.length === 1);
    const record = {
      event: 'rendezvous',
      rid: genericRid,
      protocol: 'generic',
      uuid: 'tel-generic',
      relayId: a.relayId,
      hops: 0,
      bytesToHidden: 5,
      bytesToMobile: 6,
      durationMs: any(Number),
      end: 'closed',
      source: '127.0.0.1',
    };
    expectedA.push({
      time: any(String),
      level: 'INFO',
      service: 'relay',
      msg: 'rendezvous ended',
      ...record,
    });
    // The record leaves out the relay ids a hop-less rendezvous repeats; the summary has them.
    const { event: _e, ...summary } = record;
    expect(endsA[0]).toEqual({
      ...summary,
      hiddenRelayId: a.relayId,
      mobileRelayId: a.relayId,
      startedAt: any(Number),
    });
  });

  it('through a peer relay: original lines get exactly +OK, both relays log the same rid, one end callback', async () => {
    const { r, i } = await register('tel-peer');
    const key = mobileCookieFor(r.slice(1));
    const hidden = await dial(a.address.port);
    const hiddenSaw = collect(hidden);
    hidden.write(`${r}\n`);
    await until(async () => (await store.store.listParks('generic', key)).length === 1);
    const mobile = await dial(b.address.port);
    const mobileSaw = collect(mobile);
    mobile.write(`${i}\nping`);
    await until(() => hiddenSaw.text() === '+OK\nping');
    hidden.end('pong!');
    await until(() => mobileSaw.ended());
    expect(mobileSaw.text()).toBe('+OK\npong!');
    mobile.end();
    await until(
      () =>
        logA.records.filter((x) => x.event === 'rendezvous').length === 2 &&
        logB.records.filter((x) => x.event === 'rendezvous').length === 1,
    );
    peerRid = String(logB.records.find((x) => x.event === 'rendezvous')?.rid);
    const common = {
      time: any(String),
      level: 'INFO',
      service: 'relay',
      msg: 'rendezvous ended',
      event: 'rendezvous',
      rid: peerRid,
      protocol: 'generic',
      uuid: 'tel-peer',
      hops: 1,
      hiddenRelayId: a.relayId,
      mobileRelayId: b.relayId,
      bytesToHidden: 4,
      bytesToMobile: 5,
      durationMs: any(Number),
      end: 'closed',
    };
    // The holder never saw the mobile client's address; the relay it reached did.
    expectedA.push({ ...common, relayId: a.relayId });
    expectedB.push({ ...common, relayId: b.relayId, source: '127.0.0.1' });
    expect(peerRid).toMatch(/^[A-Za-z0-9_-]{16}$/);
    expect(logA.records.filter((x) => x.event === 'rendezvous')[1]?.rid).toBe(peerRid);
    // The console's "last rendezvous" is written once: by the relay holding the hidden socket.
    expect(endsA.map((s) => s.rid)).toEqual([genericRid, peerRid]);
    expect(endsB).toEqual([]);
  });

  it('an HTTP-specific rendezvous: Rendezvous-Id on the forwarded head, Rendezvous-Target reported', async () => {
    const spy = vi.spyOn(a.records, 'noteTarget');
    const id = await provisionIdentity(store.store, { uuid: 'tel-http' });
    const code = currentCode(id);
    secrets.push(id.secret, code);
    const parked = await connectPark(
      a.httpAddress?.port as number,
      `uuid:tel-http?response=${code}`,
      'Rendezvous-Target: down\r\n',
    );
    expect(parked.head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    await until(() => a.lot.count('http', 'tel-http') === 1);
    expect(spy).toHaveBeenCalledWith('http', 'tel-http', 'down');
    const before = parked.headLength;
    // The Basic credentials name the hidden server; the relay strips them and never logs them.
    secrets.push('dGVsLWh0dHA6eA==');
    const mobile = rawExchange(
      a.httpAddress?.port as number,
      'GET /hello?rendezvous=tel-http HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dGVsLWh0dHA6eA==\r\n\r\n',
    );
    await until(() => parked.seen.text().length > before && parked.seen.text().endsWith('\r\n\r\n'));
    const forwarded = parked.seen.text().slice(before);
    httpRid = /Rendezvous-Id: ([A-Za-z0-9_-]{16})\r\n/.exec(forwarded)?.[1] ?? '';
    expect(forwarded).toBe(
      `GET /hello?rendezvous=tel-http HTTP/1.1\r\nHost: x\r\nRendezvous-Id: ${httpRid}\r\nConnection: close\r\n\r\n`,
    );
    httpHeadToHidden = forwarded.length;
    httpAnswer = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi';
    parked.s.end(httpAnswer);
    expect((await mobile).text).toBe('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi');
    await until(() => endsA.length === 3);
    expectedA.push({
      time: any(String),
      level: 'INFO',
      service: 'relay',
      msg: 'rendezvous ended',
      event: 'rendezvous',
      rid: httpRid,
      protocol: 'http',
      uuid: 'tel-http',
      relayId: a.relayId,
      hops: 0,
      bytesToHidden: httpHeadToHidden,
      bytesToMobile: httpAnswer.length,
      durationMs: any(Number),
      end: 'closed',
      source: '127.0.0.1',
    });
  });

  it('every refusal is answered as before and logged with its reason, uuid and source', async () => {
    const port = a.address.port;
    const http = a.httpAddress?.port as number;
    const step = async (
      target: number,
      payload: string | null,
      answer: string | RegExp,
      rec: object,
      waitMs = 3_000,
    ) => {
      const before = logA.records.length;
      const got = await rawExchange(target, payload, waitMs);
      if (typeof answer === 'string') expect(got.text).toBe(answer);
      else expect(got.text).toMatch(answer);
      await until(() => logA.records.length > before);
      expectedA.push(rec);
    };
    await step(port, 'hello world!\n', '-ERR malformed cookie line\n', refusal('malformed_line', 'generic'));
    await step(port, 'a'.repeat(200), '-ERR line too long\n', refusal('line_too_long', 'generic'));
    await step(port, `I${'x'.repeat(24)}\n`, '-ERR unknown cookie\n', refusal('unknown_cookie', 'generic'));
    await step(port, null, '-ERR handshake timeout\n', refusal('handshake_timeout', 'generic'));
    const nobody = await register('tel-nobody');
    await step(
      port,
      `${nobody.i}\n`,
      '-ERR no hidden server parked for this cookie\n',
      refusal('no_hidden_server', 'generic', 'tel-nobody'),
    );
    await step(
      port,
      `${nobody.r}\nearly`,
      '-ERR data before +OK\n',
      refusal('early_data', 'generic', 'tel-nobody'),
    );
    const bad = await provisionIdentity(store.store, { uuid: 'tel-badcode' });
    const good = currentCode(bad);
    const wrong = String((Number(good) + 1) % 1_000_000).padStart(good.length, '0');
    secrets.push(bad.secret, good, wrong);
    await step(
      http,
      `CONNECT uuid:tel-badcode?response=${wrong} HTTP/1.1\r\n\r\n`,
      /^HTTP\/1\.1 401 /,
      refusal('bad_code', 'http', 'tel-badcode'),
    );
    await step(
      http,
      'CONNECT uuid:tel-badcode HTTP/1.1\r\n\r\n',
      /^HTTP\/1\.1 407 /,
      refusal('missing_response', 'http'),
    );
    await step(
      http,
      'CONNECT example.com:443 HTTP/1.1\r\n\r\n',
      /^HTTP\/1\.1 403 /,
      refusal('bad_scheme', 'http'),
    );
    const eager = await provisionIdentity(store.store, { uuid: 'tel-eager' });
    const eagerCode = currentCode(eager);
    secrets.push(eager.secret, eagerCode);
    await step(
      http,
      `CONNECT uuid:tel-eager?response=${eagerCode} HTTP/1.1\r\n\r\nhello`,
      /^HTTP\/1\.1 409 /,
      refusal('early_data', 'http', 'tel-eager'),
    );
    await step(
      http,
      'GET /?rendezvous=tel-ghost HTTP/1.1\r\nHost: x\r\n\r\n',
      /^HTTP\/1\.1 404 /,
      refusal('not_found', 'http', 'tel-ghost'),
    );
    // curl --digest's first request: a normal step, so INFO, not WARN.
    await step(
      http,
      'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
      /^HTTP\/1\.1 401 .*WWW-Authenticate: Digest/s,
      refusal('no_name', 'http', undefined, 'INFO'),
    );
    await step(http, 'GARBAGE\r\n\r\n', /^HTTP\/1\.1 400 /, refusal('malformed_line', 'http'));
    await step(http, null, /^HTTP\/1\.1 408 /, refusal('handshake_timeout', 'http'));
    await step(
      a.peerAddress?.port as number,
      encodePeerLine('not-the-secret', { kind: 'generic', key: 'abcdefghijklmnopqrstuvwx' }).toString(
        'latin1',
      ),
      '-ERR peer authentication failed\n',
      refusal('peer_refused', 'peer', undefined, 'WARN', { detail: 'peer authentication failed' }),
    );
  });

  it('the records are exactly the expected ones, on both relays, and carry no secret, code or cookie', () => {
    expect(ofKind(logA.records)).toEqual(expectedA);
    expect(ofKind(logB.records)).toEqual(expectedB);
    // Apart from the refusals and rendezvous, each relay said only that it listens.
    const others = (records: LogRecord[]) =>
      records.filter((r) => r.event !== 'refusal' && r.event !== 'rendezvous').map((r) => r.msg);
    expect(others(logA.records)).toEqual(['relay listening']);
    expect(others(logB.records)).toEqual(['relay listening']);
    const all = JSON.stringify([...logA.records, ...logB.records]);
    for (const s of secrets) expect(all).not.toContain(s);
  });

  it('the metrics count it all: the registry and GET /metrics (Prometheus text, scraped over HTTP)', async () => {
    // Something parked at scrape time: one generic, one HTTP-specific hidden server.
    const idle = await register('tel-idle');
    const hidden = await dial(a.address.port);
    hidden.write(`${idle.r}\n`);
    const idleHttp = await provisionIdentity(store.store, { uuid: 'tel-idle-http' });
    const idleCode = currentCode(idleHttp);
    secrets.push(idleHttp.secret, idleCode);
    await connectPark(a.httpAddress?.port as number, `uuid:tel-idle-http?response=${idleCode}`);
    await until(() => a.lot.size === 2);
    const m = a.metrics;
    const refusals = {
      malformed_line: 2,
      line_too_long: 1,
      unknown_cookie: 1,
      handshake_timeout: 2,
      no_hidden_server: 1,
      early_data: 2,
      bad_code: 1,
      missing_response: 1,
      bad_scheme: 1,
      not_found: 1,
      no_name: 1,
      peer_refused: 1,
    };
    for (const [reason, n] of Object.entries(refusals))
      expect([reason, m.value(METRIC.relayRefusals, { reason })]).toEqual([reason, n]);
    expect(m.value(METRIC.pairings, { protocol: 'generic', path: 'local' })).toBe(1);
    expect(m.value(METRIC.pairings, { protocol: 'http', path: 'local' })).toBe(1);
    expect(m.value(METRIC.pairings, { protocol: 'generic', path: 'peer' })).toBe(0);
    expect(b.metrics.value(METRIC.pairings, { protocol: 'generic', path: 'peer' })).toBe(1);
    expect(m.value(METRIC.rendezvousBytes, { direction: 'to_hidden' })).toBe(5 + 4 + httpHeadToHidden);
    expect(m.value(METRIC.rendezvousBytes, { direction: 'to_mobile' })).toBe(6 + 5 + httpAnswer.length);
    expect(b.metrics.value(METRIC.rendezvousBytes, { direction: 'to_hidden' })).toBe(4);
    expect(b.metrics.value(METRIC.rendezvousBytes, { direction: 'to_mobile' })).toBe(5);
    // Handshakes that ended parked or paired: three generic parks and pairings here (R, R, I, + the idle R), two HTTP (+ the idle CONNECT).
    expect(m.value(METRIC.handshakeTime, { protocol: 'generic' })).toBe(4);
    expect(m.value(METRIC.handshakeTime, { protocol: 'http' })).toBe(3);
    expect(b.metrics.value(METRIC.handshakeTime, { protocol: 'generic' })).toBe(1);
    expect(b.metrics.value(METRIC.peerLinkLatency)).toBe(1);
    expect(m.value(METRIC.peerLinkLatency)).toBe(0);
    expect(m.value(METRIC.parkedSockets, { protocol: 'generic' })).toBe(1);
    expect(m.value(METRIC.parkedSockets, { protocol: 'http' })).toBe(1);
    expect(m.value(METRIC.liveSplices)).toBe(0);

    const got = await scrape(a.healthAddress?.port as number, '/metrics');
    expect(got.status).toBe(200);
    expect(got.type).toBe('text/plain; version=0.0.4');
    const prom = parseProm(got.body);
    for (const [reason, n] of Object.entries(refusals))
      expect(prom[`rendezvous_relay_refusals_total{reason="${reason}"}`]).toBe(n);
    expect(prom['rendezvous_relay_parked_sockets{protocol="generic"}']).toBe(1);
    expect(prom['rendezvous_relay_parked_sockets{protocol="http"}']).toBe(1);
    expect(prom.rendezvous_relay_live_splices).toBe(0);
    expect(prom['rendezvous_relay_pairings_total{path="local",protocol="generic"}']).toBe(1);
    expect(prom['rendezvous_relay_pairings_total{path="local",protocol="http"}']).toBe(1);
    expect(prom['rendezvous_relay_bytes_total{direction="to_hidden"}']).toBe(5 + 4 + httpHeadToHidden);
    expect(prom['rendezvous_relay_bytes_total{direction="to_mobile"}']).toBe(6 + 5 + httpAnswer.length);
    expect(prom['rendezvous_relay_handshake_milliseconds_count{protocol="generic"}']).toBe(4);
    expect(prom['rendezvous_relay_handshake_milliseconds_bucket{protocol="generic",le="+Inf"}']).toBe(4);
    expect(got.body).toContain('# TYPE rendezvous_relay_handshake_milliseconds histogram');
    const fromB = parseProm((await scrape(b.healthAddress?.port as number, '/metrics')).body);
    expect(fromB['rendezvous_relay_pairings_total{path="peer",protocol="generic"}']).toBe(1);
    expect(fromB.rendezvous_relay_peer_link_milliseconds_count).toBe(1);
    // /healthz is unchanged beside it.
    expect(JSON.parse((await scrape(a.healthAddress?.port as number, '/healthz')).body)).toMatchObject({
      ok: true,
      parked: 2,
    });
  });

  it('a drain tells the parked hidden server to re-park: one record for the lot, then the stop lines', async () => {
    const before = logA.records.length;
    await a.drain(0);
    const tail = logA.records.slice(before);
    expect(tail).toEqual(
      [
        {
          time: any(String),
          level: 'INFO',
          service: 'relay',
          msg: 'draining',
          parked: 2,
          splices: 0,
          graceMs: 0,
        },
        refusal('draining', 'generic', undefined, 'WARN', { source: undefined, parked: 1 }),
        refusal('draining', 'http', undefined, 'WARN', { source: undefined, parked: 1 }),
        { time: any(String), level: 'INFO', service: 'relay', msg: 'drained', cut: 0 },
      ].map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined))),
    );
    expect(a.metrics.value(METRIC.relayRefusals, { reason: 'draining' })).toBe(2);
    const all = JSON.stringify(logA.records);
    for (const s of secrets) expect(all).not.toContain(s);
  });
});

describe('a flood of malformed lines', () => {
  it('1,000 lines: at most the budget in records, then one carrying suppressed; the metric counts all', async () => {
    let now = 1_000_000;
    const records: LogRecord[] = [];
    const c = await startRelay({
      store: store.store,
      port: 0,
      maxHandshakesPerSource: 10_000,
      log: memoryLog('relay', records),
      refusalLog: new RefusalLogGate(20, 100, () => now),
    });
    try {
      for (let k = 0; k < 1_000; k += 50)
        await Promise.all(Array.from({ length: 50 }, () => rawExchange(c.address.port, 'nonsense\n')));
      await until(() => c.metrics.value(METRIC.relayRefusals, { reason: 'malformed_line' }) === 1_000);
      const refusals = () => records.filter((r) => r.event === 'refusal');
      expect(refusals().length).toBe(20);
      expect(refusals().every((r) => r.reason === 'malformed_line' && r.suppressed === undefined)).toBe(true);
      now += 60_000;
      expect((await rawExchange(c.address.port, 'nonsense\n')).text).toBe('-ERR malformed cookie line\n');
      await until(() => refusals().length === 21);
      expect(refusals()[20]).toEqual(
        refusal('malformed_line', 'generic', undefined, 'WARN', { suppressed: 980 }),
      );
      expect(c.metrics.value(METRIC.relayRefusals, { reason: 'malformed_line' })).toBe(1_001);
    } finally {
      await c.close();
    }
  }, 120_000);
});

describe('the refusal log budget per source address', () => {
  it('one noisy address cannot hide the records of another (red-team finding)', async () => {
    const records: LogRecord[] = [];
    const c = await startRelay({ store: store.store, port: 0, log: memoryLog('relay', records) });
    const from = (localAddress: string) =>
      new Promise<string>((resolve, reject) => {
        const s = createConnection({ host: '127.0.0.1', port: c.address.port, localAddress });
        let got = '';
        s.on('data', (d: Buffer) => {
          got += d.toString();
        });
        s.on('close', () => resolve(got));
        s.on('error', reject);
        s.end('nonsense\n');
      });
    try {
      for (let i = 0; i < 25; i++) expect(await from('127.0.0.2')).toBe('-ERR malformed cookie line\n');
      for (let i = 0; i < 5; i++) expect(await from('127.0.0.3')).toBe('-ERR malformed cookie line\n');
      await until(() => c.metrics.value(METRIC.relayRefusals, { reason: 'malformed_line' }) === 30);
      const bySource = new Map<string, number>();
      for (const r of records.filter((x) => x.event === 'refusal'))
        bySource.set(String(r.source), (bySource.get(String(r.source)) ?? 0) + 1);
      expect(Object.fromEntries(bySource)).toEqual({ '127.0.0.2': 20, '127.0.0.3': 5 });
    } finally {
      await c.close();
    }
  });
});

describe('the JSON log', () => {
  it("start and stop lines are one JSON object each, in the shared schema, service 'relay'", async () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (c: Buffer) => {
      text += c.toString();
    });
    const c = await startRelay({ store: store.store, port: 0, log: jsonLog('relay', out) });
    await rawExchange(c.address.port, 'nonsense\n');
    await c.close();
    const lines = text
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as LogRecord);
    expect(lines.map((l) => l.msg)).toEqual(['relay listening', 'refused', 'draining', 'drained']);
    for (const l of lines) {
      expect(l.service).toBe('relay');
      expect(l.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      expect(['INFO', 'WARN', 'ERROR']).toContain(l.level);
    }
    expect(lines[1]).toMatchObject({ event: 'refusal', reason: 'malformed_line', protocol: 'generic' });
  });
});

describe('the rid across a rolling deploy', () => {
  it('a holder of the previous release refuses the tagged request; it is asked again untagged and pairs', async () => {
    const seen: string[] = [];
    // The previous release's peer listener, as far as this matters: its line regex has no tag.
    const old = createServer((s) => {
      s.on('data', (c: Buffer) => {
        const line = c.toString('latin1').trimEnd();
        seen.push(line);
        s.end(line.includes(' rid=') ? '-ERR malformed peer line\n' : '+OK\n');
      });
    });
    await new Promise<void>((r) => old.listen(0, '127.0.0.1', r));
    try {
      const peer = `127.0.0.1:${(old.address() as AddressInfo).port}`;
      const latencies: number[] = [];
      const link = await dialPeer({
        peer,
        secret: SECRET,
        kind: 'generic',
        key: 'some-key',
        waitMs: 0,
        tag: { rid: 'AbCdEfGhIjKlMnOp', from: 'relay-b' },
        onAnswer: (ms) => latencies.push(ms),
      });
      expect(link).toBeDefined();
      link?.destroy();
      expect(seen).toHaveLength(2);
      expect(seen[0]).toMatch(/ rid=AbCdEfGhIjKlMnOp from=relay-b$/);
      expect(seen[1]).not.toContain('rid=');
      // Both answers were answers: two latencies.
      expect(latencies).toHaveLength(2);
    } finally {
      old.close();
    }
  });
});

describe('how a rendezvous ended', () => {
  let c: Relay;
  let d: Relay;
  const logC = memoryLog('relay');
  const logD = memoryLog('relay');
  beforeAll(async () => {
    const common = {
      store: store.store,
      port: 0,
      peerPort: 0,
      clusterSecret: SECRET,
      pairWaitMs: 2_000,
      maxHandshakesPerSource: 10_000,
      idleTimeoutMs: 600,
    };
    c = await startRelay({ ...common, log: logC });
    d = await startRelay({ ...common, log: logD });
  });
  afterAll(async () => {
    await c?.close();
    await d?.close();
  });

  /** A generic rendezvous: hidden parked on `c`, mobile through `via`; resolves once both have +OK. */
  async function rendezvous(uuid: string, via: Relay) {
    const { r, i } = await register(uuid);
    const hidden = await dial(c.address.port);
    const hiddenSaw = collect(hidden);
    hidden.on('error', () => {});
    hidden.write(`${r}\n`);
    const key = mobileCookieFor(r.slice(1));
    await until(async () => (await store.store.listParks('generic', key)).length === 1);
    const mobile = await dial(via.address.port);
    const mobileSaw = collect(mobile);
    mobile.on('error', () => {});
    mobile.write(`${i}\n`);
    await until(() => hiddenSaw.text() === '+OK\n' && mobileSaw.text() === '+OK\n');
    return { hidden, mobile };
  }

  const endOf = async (log: typeof logC, uuid: string) => {
    await until(() => log.records.some((x) => x.event === 'rendezvous' && x.uuid === uuid));
    return log.records.find((x) => x.event === 'rendezvous' && x.uuid === uuid)?.end;
  };

  it('a mobile client that resets: mobile_reset', async () => {
    const { mobile } = await rendezvous('end-mobile', c);
    mobile.resetAndDestroy();
    expect(await endOf(logC, 'end-mobile')).toBe('mobile_reset');
  });

  it('a hidden server that resets: hidden_reset', async () => {
    const { hidden } = await rendezvous('end-hidden', c);
    hidden.resetAndDestroy();
    expect(await endOf(logC, 'end-hidden')).toBe('hidden_reset');
  });

  it('nothing moves for the idle timeout: idle_timeout', async () => {
    await rendezvous('end-idle', c);
    expect(await endOf(logC, 'end-idle')).toBe('idle_timeout');
  });

  it('the relay the mobile client reached drains: drained there, peer_lost at the holder', async () => {
    await rendezvous('end-drain', d);
    await d.drain(0);
    expect(await endOf(logD, 'end-drain')).toBe('drained');
    expect(await endOf(logC, 'end-drain')).toBe('peer_lost');
    const rids = [logC, logD].map((l) => l.records.find((x) => x.uuid === 'end-drain')?.rid);
    expect(rids[0]).toBe(rids[1]);
  });
});
