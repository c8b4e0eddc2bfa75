/**
 * Issue 26 item 2: host-based routing gives each hidden server its own browser origin only if a
 * tenant's answer cannot set cookies for the others. A page of alice's answered
 * `Set-Cookie: …; Domain=<relay domain>` and the browser sent it to bob (session fixation across
 * tenants); the parent name itself still served every tenant through `?rendezvous=`, Digest and
 * Basic. curl's cookie jar stands for the browser (it honours `Domain` as browsers do).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial, rawExchange } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const run = promisify(execFile);
const DOMAIN = 'relay.example.com';
type Cluster = Awaited<ReturnType<typeof startCluster>>;

/** What each tenant answers: alice sets cookies (some for other names), bob shows the cookies it got. */
function tenant(name: string): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    req.resume();
    if (name === 'alice')
      res.setHeader('Set-Cookie', [
        `session_alice=FIXED-BY-EVIL; Domain=${DOMAIN}; Path=/`,
        `for_bob=EVIL; Domain=bob.${DOMAIN}; Path=/`,
        'own=1; Path=/; HttpOnly',
        `own_domain=2; Domain=.ALICE.${DOMAIN}; Path=/`,
      ]);
    res.end(`I am ${name}; cookies=${req.headers.cookie ?? '-'}`);
  };
}

/** Parks hidden server `uuid` (a real Node HTTP server fed the relay's sockets) with `n` sockets, re-parking after each request. */
async function parkTenant(
  c: Cluster,
  uuid: string,
  n: number,
  stop: { stopped: boolean; sockets: Socket[] },
) {
  const port = c.relays[0]?.httpAddress?.port as number;
  const id = await provisionIdentity(c.store, { uuid });
  const server: Server = createServer(tenant(uuid));
  let cookie = '';
  const park = async (): Promise<void> => {
    const s = await dial(port);
    stop.sockets.push(s);
    s.on('error', () => {});
    s.write(
      `CONNECT uuid:${uuid}?${cookie ? `cookie=${cookie}` : `response=${currentCode(id)}`} HTTP/1.1\r\n\r\n`,
    );
    const head = await new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString('latin1'))));
    if (!head.startsWith('HTTP/1.1 200')) throw new Error(`park refused: ${head}`);
    cookie ||= /Rendezvous-Cookie: (\S+)/.exec(head)?.[1] ?? '';
    s.once('data', (d: Buffer) => {
      s.unshift(d);
      server.emit('connection', s);
      if (!stop.stopped) void park().catch(() => {});
    });
  };
  for (let k = 0; k < n; k++) await park();
  await waitFor(() => (c.relays[0]?.lot.count('http', uuid) ?? 0) >= n, 5_000, `${uuid} parked`);
}

describe('regression: a tenant set cookies for every other tenant (issue 26.2)', () => {
  let c: Cluster;
  let port: number;
  let jarDir: string;
  const parked = { stopped: false, sockets: [] as Socket[] };

  beforeAll(async () => {
    c = await startCluster(1, { relay: { httpDomain: DOMAIN, pairWaitMs: 2_000 } });
    port = c.relays[0]?.httpAddress?.port as number;
    await parkTenant(c, 'alice', 3, parked);
    await parkTenant(c, 'bob', 3, parked);
    jarDir = mkdtempSync(join(tmpdir(), 'host-cookies-'));
  });
  afterAll(async () => {
    parked.stopped = true;
    for (const s of parked.sockets) s.destroy();
    await c?.close();
    if (jarDir) rmSync(jarDir, { recursive: true, force: true });
  });

  /** curl with a shared cookie jar; both tenant names resolve to the relay. */
  const browse = async (host: string, path = '/') => {
    const jar = join(jarDir, 'jar');
    const { stdout } = await run('curl', [
      '-sS',
      '--max-time',
      '10',
      '-c',
      jar,
      '-b',
      jar,
      '--resolve',
      `alice.${DOMAIN}:${port}:127.0.0.1`,
      '--resolve',
      `bob.${DOMAIN}:${port}:127.0.0.1`,
      `http://${host}:${port}${path}`,
    ]);
    return stdout;
  };

  it("alice's cookies for the relay's domain or for bob never reach bob; her own host's cookies stay hers", async () => {
    expect(await browse(`alice.${DOMAIN}`)).toBe('I am alice; cookies=-');
    const bob = await browse(`bob.${DOMAIN}`);
    expect(bob).toMatch(/^I am bob; /);
    expect(bob).not.toContain('FIXED-BY-EVIL');
    expect(bob).not.toContain('EVIL');
    expect(bob).toBe('I am bob; cookies=-');
    // Cookies for alice's own host (without Domain, or with Domain= her host) come back to her.
    const again = await browse(`alice.${DOMAIN}`);
    expect(again).toMatch(/own=1/);
    expect(again).toMatch(/own_domain=2/);
    expect(again).not.toContain('FIXED-BY-EVIL');
  });

  it('on the wire: a Domain of another name is dropped, a Domain of her own host is removed', async () => {
    const raw = await rawExchange(port, `GET / HTTP/1.1\r\nHost: alice.${DOMAIN}:${port}\r\n\r\n`);
    const head = raw.text.slice(0, raw.text.indexOf('\r\n\r\n'));
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    expect(head).not.toMatch(/FIXED-BY-EVIL|for_bob/);
    expect(head).toMatch(/\r\nSet-Cookie: own=1; Path=\/; HttpOnly(\r\n|$)/i);
    expect(head).toMatch(/\r\nSet-Cookie: own_domain=2; Path=\/(\r\n|$)/i);
    expect(head).not.toMatch(/;\s*domain=/i);
  });

  it('a head a browser would split elsewhere (a bare LF before Set-Cookie) is a 502, never forwarded', async () => {
    const id = await provisionIdentity(c.store, { uuid: 'carol' });
    const hidden = await dial(port);
    parked.sockets.push(hidden);
    hidden.write(`CONNECT uuid:carol?response=${currentCode(id)} HTTP/1.1\r\n\r\n`);
    await new Promise((r) => hidden.once('data', r));
    await waitFor(() => (c.relays[0]?.lot.count('http', 'carol') ?? 0) === 1, 5_000, 'carol parked');
    hidden.once('data', () =>
      hidden.end(
        `HTTP/1.1 200 OK\r\nX-A: 1\nSet-Cookie: s=EVIL; Domain=${DOMAIN}\r\nContent-Length: 0\r\n\r\n`,
      ),
    );
    const raw = await rawExchange(port, `GET / HTTP/1.1\r\nHost: carol.${DOMAIN}\r\n\r\n`);
    expect(raw.text).toMatch(/^HTTP\/1\.1 502 /);
    expect(raw.text).not.toContain('EVIL');
  });

  it('the parent name (and any other name under it) serves no tenant through ?rendezvous=, Digest or Basic', async () => {
    const basic = Buffer.from('bob:x').toString('base64');
    for (const host of [DOMAIN, `${DOMAIN}:${port}`, `x.y.${DOMAIN}`]) {
      for (const named of [
        'GET /?rendezvous=bob HTTP/1.1\r\n',
        'GET / HTTP/1.1\r\nAuthorization: Digest username="bob", realm="rendezvous"\r\n',
        `GET / HTTP/1.1\r\nAuthorization: Basic ${basic}\r\n`,
      ]) {
        const raw = await rawExchange(port, `${named}Host: ${host}\r\n\r\n`);
        expect(raw.text, `${host} ${named}`).toMatch(/^HTTP\/1\.1 403 /);
        expect(raw.text).toContain('<ID>.relay.example.com');
        expect(raw.text).not.toContain('I am bob');
      }
    }
  });
});

describe('with the shared origin turned on (RELAY_HTTP_SHARED_ORIGIN)', () => {
  let c: Cluster;
  const parked = { stopped: false, sockets: [] as Socket[] };

  beforeAll(async () => {
    c = await startCluster(1, { relay: { httpDomain: DOMAIN, httpSharedOrigin: true, pairWaitMs: 2_000 } });
    await parkTenant(c, 'alice', 2, parked);
  });
  afterAll(async () => {
    parked.stopped = true;
    for (const s of parked.sockets) s.destroy();
    await c?.close();
  });

  it('the parent name serves tenants again, and still cannot hand out cookies for the tenant names', async () => {
    const port = c.relays[0]?.httpAddress?.port as number;
    const raw = await rawExchange(port, `GET /?rendezvous=alice HTTP/1.1\r\nHost: ${DOMAIN}\r\n\r\n`);
    expect(raw.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(raw.text).toContain('I am alice');
    const head = raw.text.slice(0, raw.text.indexOf('\r\n\r\n'));
    // Domain=<the parent name> is the parent's own host now: kept host-only, so not sent to tenants.
    expect(head).toMatch(/\r\nSet-Cookie: session_alice=FIXED-BY-EVIL; Path=\/(\r\n|$)/i);
    expect(head).not.toMatch(/;\s*domain=/i);
  });
});
