/**
 * Relays as separate processes (`rendezvous relay`, as the container runs them) behind a
 * round-robin balancer standing in for the NLB: a relay killed with SIGKILL, and one drained
 * with SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exposeHiddenServer, type HiddenServer } from '../../client/hidden-server.js';
import { currentCode } from '../../core/totp.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { startApiAdapter } from '../../local/api-adapter.js';
import { provisionIdentity } from '../../server/identities.js';
import { startBalancer } from '../support/balancer.js';
import { BIN } from '../support/cli.js';
import { closedWithin, dial, readAll, sha256, startEchoServer } from '../support/net.js';
import { embeddedStore } from '../support/store.js';
import { parkedOnHealth, waitFor } from '../support/wait.js';

interface RelayProcess {
  child: ChildProcess;
  port: number;
  httpPort: number;
  health: number;
  exit: Promise<number | null>;
  /** Everything the relay wrote on stdout so far. */
  output: () => string;
}

let store: Awaited<ReturnType<typeof embeddedStore>>;
let balancer: Awaited<ReturnType<typeof startBalancer>>;
let api: Awaited<ReturnType<typeof startApiAdapter>>;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
const relays: RelayProcess[] = [];
const agents: HiddenServer[] = [];

async function spawnRelay(extra: Record<string, string> = {}, nofile?: number): Promise<RelayProcess> {
  // With `nofile`, the relay runs under that descriptor limit (as the task definition sets one).
  const [cmd, args] = nofile
    ? ['sh', ['-c', `ulimit -n ${nofile} && exec "$0" "$@"`, process.execPath, BIN, 'relay']]
    : [process.execPath, [BIN, 'relay']];
  const child = spawn(cmd as string, args as string[], {
    env: {
      ...process.env,
      AWS_ENDPOINT_URL_DYNAMODB: store.endpoint,
      AWS_REGION: 'local',
      RENDEZVOUS_TABLE: store.store.table,
      RELAY_BIND: '127.0.0.1',
      RELAY_PORT: '0',
      RELAY_HTTP_PORT: '0',
      RELAY_PEER_PORT: '0',
      RELAY_HEALTH_PORT: '0',
      RELAY_PEER_HOST: '127.0.0.1',
      RELAY_CLUSTER_SECRET: 'process-cluster-secret',
      RELAY_DRAIN_GRACE_MS: '4000',
      RELAY_PAIR_WAIT_MS: '4000',
      ...extra,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let text = '';
  child.stdout?.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const listening = await new Promise<{ generic: string; health: string; http: string }>(
    (resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`relay did not start: ${text}`)), 20_000);
      child.stdout?.on('data', () => {
        for (const line of text.split('\n')) {
          if (line.includes('"relay listening"')) {
            clearTimeout(t);
            resolve(JSON.parse(line));
          }
        }
      });
    },
  );
  const port = Number(listening.generic.split(':').pop());
  const health = Number(listening.health.split(':').pop());
  const httpPort = Number(listening.http.split(':').pop());
  return { child, port, httpPort, health, exit, output: () => text };
}

const parkedOnHealthOf = (r: { health: number }) => parkedOnHealth(r.health);

beforeAll(async () => {
  store = await embeddedStore();
  for (let i = 0; i < 3; i++) relays.push(await spawnRelay());
  balancer = await startBalancer(relays.map((r) => r.port));
  const policy = { relayHost: '127.0.0.1', relayPort: balancer.port };
  api = await startApiAdapter({
    register: makeRegisterHandler(() => ({ store: store.store, policy })),
    lookup: makeLookupHandler(() => ({ store: store.store })),
    port: 0,
  });
  echo = await startEchoServer();
}, 60_000);

afterAll(async () => {
  for (const a of agents) a.close();
  for (const r of relays) r.child.kill('SIGKILL');
  await api?.close();
  await balancer?.close();
  await echo?.close();
  await store?.close();
});

async function lookupCookie(uuid: string): Promise<string> {
  const res = await fetch(`${api.url}/?uuid=${uuid}`);
  return ((await res.json()) as { result: { cookie: string } }).result.cookie;
}

/** Opens a raw mobile connection to relay `r` and waits for +OK. */
async function mobileOn(
  r: RelayProcess,
  cookie: string,
): Promise<{ socket: Socket; received: Promise<Buffer> }> {
  const socket = await dial(r.port);
  socket.write(`${cookie}\n`);
  await new Promise<void>((resolve, reject) => {
    socket.once('data', (c: Buffer) =>
      c.toString().startsWith('+OK') ? resolve() : reject(new Error(`relay said ${c.toString()}`)),
    );
  });
  return { socket, received: readAll(socket) };
}

describe('relay processes behind a balancer', () => {
  it('a relay killed with SIGKILL: the mobile stream ends within 2 s, the agent re-parks, a new mobile succeeds', async () => {
    const id = await provisionIdentity(store.store, { uuid: 'proc-kill' });
    agents.push(
      exposeHiddenServer({
        api: api.url,
        uuid: 'proc-kill',
        secret: id.secret,
        target: { host: '127.0.0.1', port: echo.port },
        backoff: { minMs: 50, maxMs: 500 },
      }),
    );
    let holder: RelayProcess | undefined;
    await waitFor(
      async () => {
        for (const r of relays) if ((await parkedOnHealthOf(r)) > 0) holder = r;
        return holder !== undefined;
      },
      10_000,
      'parked',
    );
    const victim = holder as RelayProcess;
    const other = relays.find((r) => r !== victim) as RelayProcess;
    const cookie = await lookupCookie('proc-kill');
    const mobile = await mobileOn(other, cookie);
    mobile.socket.on('error', () => {});
    mobile.received.catch(() => {});
    // Mid-stream: keep sending while the relay holding the hidden side dies.
    const pump = setInterval(() => mobile.socket.write(randomBytes(16 * 1024)), 5);
    await new Promise((r) => setTimeout(r, 200));
    // The agent re-parks after +OK; find the relay holding the *spliced* socket: the victim.
    victim.child.kill('SIGKILL');
    const killedAt = Date.now();
    await closedWithin(mobile.socket, 2_000);
    clearInterval(pump);
    expect(Date.now() - killedAt).toBeLessThan(2_000);
    balancer.targets.splice(balancer.targets.indexOf(victim.port), 1);
    relays.splice(relays.indexOf(victim), 1);
    await waitFor(
      async () => (await Promise.all(relays.map((r) => parkedOnHealthOf(r)))).some((n) => n > 0),
      10_000,
      're-parked',
    );
    const payload = randomBytes(256 * 1024);
    for (const r of relays) {
      const m = await mobileOn(r, cookie);
      m.socket.end(payload);
      expect(sha256(await m.received)).toBe(sha256(payload));
    }
  }, 60_000);

  it('SIGTERM drains: a live splice survives within the grace period, parked agents re-park elsewhere, exit 0', async () => {
    const id = await provisionIdentity(store.store, { uuid: 'proc-drain' });
    agents.push(
      exposeHiddenServer({
        api: api.url,
        uuid: 'proc-drain',
        secret: id.secret,
        target: { host: '127.0.0.1', port: echo.port },
        pool: 4,
        backoff: { minMs: 50, maxMs: 500 },
      }),
    );
    await waitFor(
      async () => (await Promise.all(relays.map((r) => parkedOnHealthOf(r)))).reduce((a, b) => a + b, 0) >= 4,
      10_000,
      'pool parked',
    );
    const counts = await Promise.all(relays.map((r) => parkedOnHealthOf(r)));
    const draining = relays[(counts[0] as number) >= (counts[1] as number) ? 0 : 1] as RelayProcess;
    const survivor = relays.find((r) => r !== draining) as RelayProcess;
    const cookie = await lookupCookie('proc-drain');
    // A splice through the relay about to drain (mobile and hidden both on it, or linked to it).
    const mobile = await mobileOn(draining, cookie);
    mobile.socket.write('before ');
    draining.child.kill('SIGTERM');
    await waitFor(
      async () => (await parkedOnHealthOf(survivor)) >= 4,
      10_000,
      'agents re-parked on the survivor',
    );
    await new Promise((r) => setTimeout(r, 500));
    mobile.socket.end('after');
    expect((await mobile.received).toString()).toBe('before after');
    expect(await draining.exit).toBe(0);
    relays.splice(relays.indexOf(draining), 1);
  }, 60_000);
});

describe('ends and limits of one relay process', () => {
  it('SIGTERM with no live splice exits at once (grace 60 s), even after parks that closed at once', async () => {
    const r = await spawnRelay({ RELAY_DRAIN_GRACE_MS: '60000' });
    try {
      const id = await provisionIdentity(store.store, { uuid: 'proc-quick-drain' });
      const code = currentCode(id);
      const put = await fetch(`${api.url}/?uuid=proc-quick-drain&response=${code}`, { method: 'PUT' });
      const hiddenCookie = ((await put.json()) as { result: { cookie: string } }).result.cookie;
      for (let k = 0; k < 5; k++) {
        const g = await dial(r.port);
        g.on('error', () => {});
        g.end(`${hiddenCookie}\n`);
        const h = await dial(r.httpPort);
        h.on('error', () => {});
        h.end(`CONNECT uuid:proc-quick-drain?response=${code} HTTP/1.1\r\n\r\n`);
      }
      await new Promise((res) => setTimeout(res, 500));
      // Mobile clients that keep their side open: none may be paired with a dead park.
      const mobile = await dial(r.port);
      mobile.write(`${await lookupCookie('proc-quick-drain')}\n`);
      const said = await new Promise<string>((res) => mobile.once('data', (c: Buffer) => res(c.toString())));
      expect(said).toMatch(/^-ERR /);
      mobile.destroy();
      await waitFor(
        async () => {
          const h = (await (await fetch(`http://127.0.0.1:${r.health}/healthz`)).json()) as {
            parked: number;
            splices: number;
          };
          return h.parked === 0 && h.splices === 0;
        },
        5_000,
        'healthz counters at zero',
      );
      const started = Date.now();
      r.child.kill('SIGTERM');
      expect(await r.exit).toBe(0);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      r.child.kill('SIGKILL');
    }
  }, 60_000);

  it('at the descriptor ceiling the relay logs it (rate-limited) and serves again once descriptors free up', async () => {
    const r = await spawnRelay({}, 96);
    const open: Socket[] = [];
    try {
      for (let k = 0; k < 160; k++) {
        const s = await dial(r.port).catch(() => undefined);
        if (!s) break;
        s.on('error', () => {});
        open.push(s);
      }
      await waitFor(() => /"reason":"at_capacity"/.test(r.output()), 10_000, 'fd ceiling logged');
      // Past the ceiling a connection is told why, not reset.
      const excess = await dial(r.port);
      expect((await readAll(excess)).toString()).toBe('-ERR relay at capacity, try again\n');
      const lines = r
        .output()
        .split('\n')
        .filter((l) => l.includes('"reason":"at_capacity"') || l.includes('"limit":"file descriptors"'));
      // Rate-limited: at most the refusal log's budget (20 per reason per minute) of ~100 refusals.
      expect(lines.length).toBeGreaterThanOrEqual(1);
      expect(lines.length).toBeLessThanOrEqual(21);
      for (const s of open) s.destroy();
      await new Promise((res) => setTimeout(res, 500));
      const s = await dial(r.port);
      s.write('Rnope\n');
      expect((await readAll(s)).toString()).toBe('-ERR unknown cookie\n');
    } finally {
      for (const s of open) s.destroy();
      r.child.kill('SIGKILL');
    }
  }, 60_000);
});
