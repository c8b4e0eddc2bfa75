/**
 * The HTTP-specific protocol across regions (issue 18): two relays configured as two regions
 * share one store (standing for the replicated global table). A mobile request reaching region
 * B for a hidden server parked in region A gets `307` to region A's relay — host-routed for
 * requests named by Host or credentials, the query kept for `?rendezvous=` — and curl -L follows
 * it to the hidden server. Never a 404 while the hidden server is online.
 */
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHiddenServer, type HiddenServer } from '../../client/hidden-server.js';
import { parseRequestHead } from '../../core/http-head.js';
import { regionFromEnv } from '../../relay/main.js';
import { redirectLocation } from '../../relay/regions.js';
import { type Relay, startRelay } from '../../relay/server.js';
import { provisionIdentity } from '../../server/identities.js';
import { freePort, rawExchange } from '../support/net.js';
import { embeddedStore } from '../support/store.js';

const run = promisify(execFile);
let env: Awaited<ReturnType<typeof embeddedStore>>;
let relayA: Relay; // eu-west-1: where the hidden server parks
let relayB: Relay; // us-east-1: where the mobile client arrives
let portA: number;
let portB: number;
let hidden: HiddenServer;
let app: Server;
const UUID = 'web-in-eu';

async function regionRelay(region: string, host: string, port: number, pairWaitMs = 1_000): Promise<Relay> {
  return startRelay({
    store: env.store,
    port: 0,
    httpPort: port,
    region,
    httpDomain: host,
    httpPublicUrl: `http://${host}:${port}`,
    pairWaitMs,
  });
}

beforeAll(async () => {
  env = await embeddedStore();
  portA = await freePort();
  portB = await freePort();
  relayA = await regionRelay('eu-west-1', 'relay-a.localhost', portA);
  relayB = await regionRelay('us-east-1', 'relay-b.localhost', portB, 4_000);
  app = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          region: 'eu-west-1',
          method: req.method,
          url: req.url,
          host: req.headers.host,
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
  });
  const id = await provisionIdentity(env.store, { uuid: UUID });
  hidden = createHiddenServer(
    { protocol: 'http', relay: `http://127.0.0.1:${portA}`, uuid: UUID, secret: id.secret, pool: 2 },
    (socket: Socket) => app.emit('connection', socket),
  );
  await new Promise<void>((resolve, reject) => {
    hidden.once('error', reject);
    hidden.listen(() => resolve());
  });
  // Both pool slots parked and recorded (the record carries region A and its public URL).
  for (;;) {
    const recs = await env.store.listParks('http', UUID);
    if (recs.length > 0 && relayA.lot.count('http', UUID) === 2) {
      expect(recs[0]).toMatchObject({ region: 'eu-west-1', httpUrl: `http://relay-a.localhost:${portA}` });
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
});
afterAll(async () => {
  hidden?.close();
  await relayA?.close();
  await relayB?.close();
  await env?.close();
});

async function curl(...args: string[]): Promise<{ status: string; body: string; urls: string }> {
  const { stdout } = await run('curl', [
    '-sS',
    '-L',
    '--max-time',
    '15',
    '-w',
    '\n%{http_code} %{num_redirects} %{url_effective}',
    ...args,
  ]);
  const nl = stdout.lastIndexOf('\n');
  return { body: stdout.slice(0, nl), status: stdout.slice(nl + 1), urls: stdout.slice(nl + 1) };
}

describe('HTTP-specific requests in the wrong region (issue 18)', () => {
  it('named by Host in region B: 307 host-routed to region A, path and query kept', async () => {
    const raw = await rawExchange(
      portB,
      `GET /status?x=1&y=2 HTTP/1.1\r\nHost: ${UUID}.relay-b.localhost:${portB}\r\n\r\n`,
    );
    expect(raw.text).toMatch(/^HTTP\/1\.1 307 Temporary Redirect\r\n/);
    expect(raw.text).toContain(`\r\nLocation: http://${UUID}.relay-a.localhost:${portA}/status?x=1&y=2\r\n`);
    expect(raw.text).toContain('hidden server parked in region eu-west-1');
    // curl -L follows it to the hidden server.
    const r = await curl(`http://${UUID}.relay-b.localhost:${portB}/status?x=1&y=2`);
    expect(r.status).toBe(`200 1 http://${UUID}.relay-a.localhost:${portA}/status?x=1&y=2`);
    expect(JSON.parse(r.body)).toMatchObject({ region: 'eu-west-1', method: 'GET', url: '/status?x=1&y=2' });
  });

  it('named by ?rendezvous= with host routing on: host-routed at region A, the query kept', async () => {
    // Region A's parent name serves no tenant (issue 26.2), so the redirect names the host.
    const r = await curl(`http://127.0.0.1:${portB}/p/q?rendezvous=${UUID}&a=b`);
    expect(r.status).toBe(`200 1 http://${UUID}.relay-a.localhost:${portA}/p/q?rendezvous=${UUID}&a=b`);
    expect(JSON.parse(r.body)).toMatchObject({ url: `/p/q?rendezvous=${UUID}&a=b` });
  });

  it('a POST keeps its method and body across the redirect (307)', async () => {
    const r = await curl('-d', 'hello=world', `http://${UUID}.relay-b.localhost:${portB}/submit`);
    expect(r.status).toMatch(/^200 1 /);
    expect(JSON.parse(r.body)).toMatchObject({ method: 'POST', url: '/submit', body: 'hello=world' });
  });

  it('named by Digest or Basic credentials: host-routed (clients do not resend them to another host)', async () => {
    const digest = await curl('--digest', '-u', `${UUID}:x`, `http://127.0.0.1:${portB}/d`);
    // curl counts the Digest challenge's retry as one more hop.
    expect(digest.status).toBe(`200 2 http://${UUID}.relay-a.localhost:${portA}/d`);
    const basic = await curl('-u', `${UUID}:x`, `http://127.0.0.1:${portB}/b`);
    expect(basic.status).toBe(`200 1 http://${UUID}.relay-a.localhost:${portA}/b`);
    expect(JSON.parse(basic.body)).toMatchObject({ url: '/b' });
  });

  it('region A itself serves it directly; an unknown name in region B is still a 404', async () => {
    const here = await curl(`http://${UUID}.relay-a.localhost:${portA}/direct`);
    expect(here.status).toMatch(/^200 0 /);
    const none = await rawExchange(
      portB,
      'GET /?rendezvous=nobody-anywhere HTTP/1.1\r\nHost: x\r\n\r\n',
      10_000,
    );
    expect(none.text).toMatch(/^HTTP\/1\.1 404 /);
  });

  it('a request that waits in region B while the hidden server parks in region A is redirected, not 404', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'late-in-eu' });
    const answer = rawExchange(
      portB,
      `GET /late HTTP/1.1\r\nHost: late-in-eu.relay-b.localhost:${portB}\r\n\r\n`,
      10_000,
    );
    await new Promise((r) => setTimeout(r, 200));
    const late = createHiddenServer(
      { protocol: 'http', relay: `http://127.0.0.1:${portA}`, uuid: 'late-in-eu', secret: id.secret },
      (socket: Socket) => app.emit('connection', socket),
    );
    try {
      late.listen();
      const raw = await answer;
      expect(raw.text).toMatch(/^HTTP\/1\.1 307 /);
      expect(raw.text).toContain(`\r\nLocation: http://late-in-eu.relay-a.localhost:${portA}/late\r\n`);
    } finally {
      late.close();
    }
  });

  it('RELAY_REGION, RELAY_HTTP_PUBLIC_URL and RENDEZVOUS_HOME_REGION from the environment', () => {
    expect(regionFromEnv({})).toEqual({ region: undefined, httpPublicUrl: undefined, home: undefined });
    const there = regionFromEnv({
      RELAY_REGION: 'us-east-1',
      RELAY_HTTP_PUBLIC_URL: 'https://relay-us-east-1.example.com',
      RENDEZVOUS_HOME_REGION: 'eu-west-1',
    });
    expect(there).toMatchObject({
      region: 'us-east-1',
      httpPublicUrl: 'https://relay-us-east-1.example.com',
    });
    expect(there.home).toBeDefined();
    there.home?.close();
    expect(
      regionFromEnv({ RELAY_REGION: 'eu-west-1', RENDEZVOUS_HOME_REGION: 'eu-west-1' }).home,
    ).toBeUndefined();
    expect(() => regionFromEnv({ RELAY_HTTP_PUBLIC_URL: 'relay.example.com' })).toThrow(/http\(s\) URL/);
  });

  it('forms of Location: absolute targets keep path and query; ids that are no host label use the query', () => {
    const head = (target: string) => parseRequestHead(`GET ${target} HTTP/1.1\r\nHost: h`);
    const rec = { httpUrl: 'https://relay-eu-west-1.example.com' };
    expect(redirectLocation(rec, head('http://x.example/a?b=c'), 'Web1', 'host')).toBe(
      'https://web1.relay-eu-west-1.example.com/a?b=c',
    );
    expect(redirectLocation(rec, head('/a?b=c'), 'web.1', 'credentials')).toBe(
      'https://relay-eu-west-1.example.com/a?b=c&rendezvous=web.1',
    );
    expect(redirectLocation({ httpUrl: 'not a url' }, head('/'), 'w', 'host')).toBeUndefined();
  });
});

describe('regression: Location injection in the cross-region 307 (issue 26.5)', () => {
  const rec = { httpUrl: 'https://relay-eu.example.com' };
  const head = (target: string) => parseRequestHead(`GET ${target} HTTP/1.1\r\nHost: h`);

  it('a target that is no path is refused (400), never turned into another host in Location', async () => {
    const basic = Buffer.from(`${UUID}:x`).toString('base64');
    for (const [target, named] of [
      [`x:@evil.example/x?rendezvous=${UUID}`, ''],
      ['x:.evil.example/', `Authorization: Basic ${basic}\r\n`],
      [`x:.evil.example/?rendezvous=${UUID}`, ''],
    ] as const) {
      const raw = await rawExchange(portB, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${named}\r\n`);
      expect(raw.text, target).toMatch(/^HTTP\/1\.1 400 /);
      expect(raw.text, target).not.toContain('evil.example');
    }
    for (const by of ['query', 'host', 'credentials'] as const) {
      expect(() => redirectLocation(rec, head(`x:@evil.example/x?rendezvous=${UUID}`), UUID, by)).toThrow(
        /path/,
      );
      expect(() => redirectLocation(rec, head('x:.evil.example/'), UUID, by)).toThrow(/path/);
      // A path that a URL parser would read as another host (`//host`, `/\host`) is no path either.
      expect(() => redirectLocation(rec, head('//evil.example/x'), 'web.1', by)).toThrow(/path/);
      expect(() => redirectLocation(rec, head('/\\evil.example/x'), 'web.1', by)).toThrow(/path/);
    }
  });

  it('an origin-form path and query keep their place in Location, percent-encoded where needed', () => {
    expect(redirectLocation(rec, head('/a/b?c=d'), 'w1', 'host')).toBe(
      'https://w1.relay-eu.example.com/a/b?c=d',
    );
    expect(redirectLocation(rec, head('/a"<b>?q=1'), 'w1', 'query')).toBe(
      'https://relay-eu.example.com/a%22%3Cb%3E?q=1',
    );
  });
});
