/**
 * Issue 12 items 3 and 13 on the HTTP-specific port: one mobile connection reaches one hidden
 * server (keep-alive never carries a request to another tenant), and host-based routing gives
 * each hidden server its own origin (`<id>.<RELAY_HTTP_DOMAIN>`).
 */
import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial, readAll } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const DOMAIN = 'relay.example.com';
let c: Awaited<ReturnType<typeof startCluster>>;
let port: number;

/** What each hidden HTTP server saw. */
const seen: Record<string, string[]> = { alice: [], bob: [] };
const servers: Server[] = [];
const parked: Socket[] = [];
const cookies: Record<string, string> = {};
let stopped = false;

/** A hidden HTTP server: a real Node HTTP server fed the relay's parked sockets, re-parking after each. */
function hiddenHttpServer(name: string): Server {
  const server = createServer((req: IncomingMessage, res) => {
    seen[name]?.push(
      `${req.method} ${req.url} auth=${req.headers.authorization ?? '-'} conn=${req.headers.connection ?? '-'}`,
    );
    req.resume();
    req.on('end', () =>
      res.end(`I am ${name.toUpperCase()}; got ${req.url} auth=${req.headers.authorization ?? '-'}`),
    );
  });
  servers.push(server);
  return server;
}

async function park(uuid: string, server: Server, code?: string): Promise<void> {
  const s = await dial(port);
  parked.push(s);
  const cred = cookies[uuid] ? `cookie=${cookies[uuid]}` : `response=${code}`;
  s.write(`CONNECT uuid:${uuid}?${cred} HTTP/1.1\r\nHost: relay\r\n\r\n`);
  const head = await new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString('latin1'))));
  if (!head.startsWith('HTTP/1.1 200')) throw new Error(`park refused: ${head}`);
  cookies[uuid] ??= /Rendezvous-Cookie: (\S+)/.exec(head)?.[1] ?? '';
  // First bytes of a rendezvous re-park another socket, as the agent does.
  s.once('data', (d: Buffer) => {
    s.unshift(d);
    server.emit('connection', s);
    if (!stopped) void park(uuid, server).catch(() => {});
  });
  s.on('error', () => {});
}

beforeAll(async () => {
  c = await startCluster(1, { relay: { httpDomain: DOMAIN, pairWaitMs: 2_000 } });
  port = c.relays[0]?.httpAddress?.port as number;
  for (const name of ['alice', 'bob']) {
    const id = await provisionIdentity(c.store, { uuid: name });
    const server = hiddenHttpServer(name);
    await park(name, server, currentCode(id));
    for (let k = 0; k < 3; k++) await park(name, server);
  }
  await waitFor(() => (c.relays[0]?.lot.count('http', 'bob') ?? 0) >= 4, 3_000, 'parked');
});
afterAll(async () => {
  stopped = true;
  for (const s of parked) s.destroy();
  for (const s of servers) s.close();
  await c?.close();
});

describe('keep-alive never crosses tenants', () => {
  it('fetch with keep-alive: the request for bob reaches bob, never alice', async () => {
    seen.alice = [];
    seen.bob = [];
    const base = `http://127.0.0.1:${port}`;
    const a = await fetch(`${base}/?rendezvous=alice`, {
      headers: { authorization: 'Bearer token-for-alice' },
    });
    // The relay strips the Authorization of the request it routes (as the original does).
    expect(await a.text()).toBe('I am ALICE; got /?rendezvous=alice auth=-');
    expect(a.headers.get('connection')).toBe('close');
    const b = await fetch(`${base}/?rendezvous=bob`, { headers: { authorization: 'Bearer token-for-bob' } });
    expect(await b.text()).toBe('I am BOB; got /?rendezvous=bob auth=-');
    for (let k = 0; k < 4; k++) {
      const who = k % 2 ? 'bob' : 'alice';
      const r = await fetch(`${base}/n${k}?rendezvous=${who}`);
      expect(await r.text()).toMatch(new RegExp(`^I am ${who.toUpperCase()}; got /n${k}`));
    }
    expect(seen.alice.join('\n')).not.toMatch(/bob/);
    expect(seen.bob.join('\n')).not.toMatch(/alice/);
    expect(seen.alice.length + seen.bob.length).toBe(6);
    // The forwarded request tells the hidden server to close after its response.
    expect(seen.alice[0]).toMatch(/conn=close$/);
  });

  it("two requests written at once on one connection: the second never reaches the first one's server", async () => {
    seen.alice = [];
    seen.bob = [];
    const s = await dial(port);
    s.write(
      'GET /first?rendezvous=alice HTTP/1.1\r\nHost: r\r\nConnection: keep-alive\r\n\r\n' +
        'GET /second?rendezvous=bob HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer token-for-bob\r\n\r\n',
    );
    const text = (await readAll(s)).toString('latin1');
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text).toMatch(/\r\nConnection: close\r\n/i);
    expect(text).toContain('I am ALICE; got /first?rendezvous=alice');
    expect(text).not.toContain('ALICE; got /second');
    await new Promise((r) => setTimeout(r, 200));
    expect(seen.alice).toEqual(['GET /first?rendezvous=alice auth=- conn=close']);
    s.destroy();
  });

  it('a POST body is forwarded whole, and bytes after it are not', async () => {
    seen.alice = [];
    const s = await dial(port);
    s.write(
      'POST /p?rendezvous=alice HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n' +
        '5\r\nhello\r\n0\r\n\r\n' +
        'GET /smuggled?rendezvous=bob HTTP/1.1\r\nHost: r\r\n\r\n',
    );
    const text = (await readAll(s)).toString('latin1');
    expect(text).toContain('I am ALICE; got /p?rendezvous=alice');
    await new Promise((r) => setTimeout(r, 200));
    expect(seen.alice).toEqual(['POST /p?rendezvous=alice auth=- conn=close']);
    s.destroy();
  });
});

describe('a hidden server that ignores Connection: close', () => {
  /** Parks a raw socket for `uuid` that answers `reply` and then keeps its connection open. */
  async function rawPark(uuid: string, reply: string): Promise<{ request: Promise<string>; socket: Socket }> {
    const s = await dial(port);
    parked.push(s);
    const cred = cookies[uuid]
      ? `cookie=${cookies[uuid]}`
      : `response=${currentCode(await provisionIdentity(c.store, { uuid }))}`;
    s.write(`CONNECT uuid:${uuid}?${cred} HTTP/1.1\r\n\r\n`);
    const head = await new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString('latin1'))));
    cookies[uuid] ??= /Rendezvous-Cookie: (\S+)/.exec(head)?.[1] ?? '';
    const request = new Promise<string>((r) =>
      s.once('data', (d: Buffer) => {
        r(d.toString('latin1'));
        s.write(reply);
      }),
    );
    return { request, socket: s };
  }

  it('the mobile client still sees Connection: close and the connection ends after the answer', async () => {
    const replies = [
      'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhi',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n',
      'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n',
    ];
    for (const [k, reply] of replies.entries()) {
      const uuid = `carol-${k}`;
      const hidden = await rawPark(uuid, reply);
      await waitFor(() => (c.relays[0]?.lot.count('http', uuid) ?? 0) === 1, 3_000, 'parked');
      const mobile = await dial(port);
      mobile.write(`GET /?rendezvous=${uuid} HTTP/1.1\r\nHost: r\r\nConnection: keep-alive\r\n\r\n`);
      expect(await hidden.request).toMatch(/\r\nConnection: close\r\n\r\n$/);
      const text = (await readAll(mobile)).toString('latin1');
      expect(text).toMatch(/\r\nConnection: close\r\n\r\n/);
      expect(text).not.toMatch(/keep-alive/i);
      if (k === 0) expect(text).toBe('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi');
      if (k === 1) expect(text).toMatch(/\r\n\r\n2\r\nhi\r\n0\r\n\r\n$/);
      if (k === 2)
        expect(text).toMatch(
          /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 204 No Content\r\nConnection: close\r\n\r\n$/,
        );
      mobile.destroy();
    }
  });
});

describe('upgrades', () => {
  it('a 101 turns the connection into a tunnel to that one hidden server', async () => {
    const id = await provisionIdentity(c.store, { uuid: 'dave' });
    const s = await dial(port);
    parked.push(s);
    s.write(`CONNECT uuid:dave?response=${currentCode(id)} HTTP/1.1\r\n\r\n`);
    await new Promise((r) => s.once('data', r));
    await waitFor(() => (c.relays[0]?.lot.count('http', 'dave') ?? 0) === 1, 3_000, 'parked');
    const got: Buffer[] = [];
    s.once('data', (d: Buffer) => {
      expect(d.toString('latin1')).toMatch(
        /^GET \/ws\?rendezvous=dave HTTP\/1\.1\r\n.*Connection: Upgrade\r\n/s,
      );
      s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      s.on('data', (more: Buffer) => {
        got.push(more);
        s.write(more);
      });
    });
    const mobile = await dial(port);
    mobile.write(
      'GET /ws?rendezvous=dave HTTP/1.1\r\nHost: r\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
    );
    let text = '';
    mobile.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    await waitFor(() => text.includes('\r\n\r\n'), 3_000, '101');
    expect(text).toMatch(/^HTTP\/1\.1 101 /);
    mobile.write('frame-1');
    await waitFor(() => text.endsWith('frame-1'), 3_000, 'echo 1');
    mobile.write('GET /?rendezvous=bob HTTP/1.1\r\n\r\n');
    await waitFor(() => text.endsWith('GET /?rendezvous=bob HTTP/1.1\r\n\r\n'), 3_000, 'echo 2');
    expect(Buffer.concat(got).toString()).toBe('frame-1GET /?rendezvous=bob HTTP/1.1\r\n\r\n');
    mobile.destroy();
  });
});

describe('host-based routing', () => {
  it('Host: <id>.<domain> names the hidden server (port optional, case-insensitive domain)', async () => {
    const ask = async (host: string, path = '/x') => {
      const s = await dial(port);
      s.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      return (await readAll(s)).toString('latin1');
    };
    expect(await ask(`alice.${DOMAIN}`)).toContain('I am ALICE; got /x');
    expect(await ask(`bob.RELAY.Example.com:8443`)).toContain('I am BOB; got /x');
    // The host's name wins over a query naming someone else: the origin is the host's.
    expect(await ask(`alice.${DOMAIN}`, '/y?rendezvous=bob')).toContain('I am ALICE; got /y?rendezvous=bob');
    // Not under the domain: the query still works, and naming nobody is still a 401.
    expect(await ask('elsewhere.example.org', '/z?rendezvous=bob')).toContain('I am BOB; got /z');
    // The parent name and names under it that name no tenant serve none (issue 26.2).
    expect(await ask(`${DOMAIN}`)).toMatch(/^HTTP\/1\.1 403 /);
    expect(await ask(`a.b.${DOMAIN}`)).toMatch(/^HTTP\/1\.1 403 /);
  });

  it('curl --resolve <id>.<domain> reaches that hidden server', async () => {
    const { stdout } = await promisify(execFile)('curl', [
      '-sS',
      '--max-time',
      '10',
      '--resolve',
      `bob.${DOMAIN}:${port}:127.0.0.1`,
      `http://bob.${DOMAIN}:${port}/page`,
    ]);
    expect(stdout).toBe('I am BOB; got /page auth=-');
  });
});
