/**
 * The parked-socket groups of `npm run bench`: RSS per parked socket and store requests at rest.
 * Each run starts a fresh relay process (memory a previous run freed would otherwise be reused and
 * hide the cost), parks N hidden-server sockets from separate parker processes (a process holds at
 * most its descriptor limit), checks that the relay's own `/healthz` count equals N before RSS is
 * read, and fails loudly otherwise. Store requests are counted at the store, by a proxy in front of
 * it that reads each request's `X-Amz-Target`.
 */

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NOTICE_WINDOW_MS } from '../relay/revalidate.js';
import { mobileCookieFor, newCookie } from '../server/cookies.js';
import { SPLIT_COOKIE_SCHEME, type Store } from '../server/store/index.js';
import { countingStoreProxy } from '../test/support/counting-proxy.js';
import { freePort } from './harness.js';

/** The hard limit on open descriptors of processes this one starts (`ulimit -Hn`). */
export function hardFdLimit(): number {
  const m = /^Max open files\s+\d+\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return m?.[1] === 'unlimited' ? 1_048_576 : Number(m?.[1] ?? 1024);
}

/** The relay keeps this share of its descriptor limit for itself (relay/capacity.ts FD_HEADROOM_SHARE). */
const RELAY_FD_HEADROOM = 0.2;

/**
 * The largest parked count one relay can hold on this machine: its descriptor limit (raised to the
 * hard limit) less the relay's own headroom and some slack, rounded down to a thousand.
 */
export function largestParkable(hard = hardFdLimit()): number {
  return Math.floor((hard * (1 - RELAY_FD_HEADROOM) - 500) / 1000) * 1000;
}

const started = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of started) c.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

/** Runs `cmd args` with its soft descriptor limit raised to the hard one (killed when the bench exits). */
export function spawnRaised(cmd: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn('sh', ['-c', 'ulimit -n "$(ulimit -Hn)"; exec "$@"', 'sh', cmd, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  started.add(child);
  child.once('exit', () => started.delete(child));
  return child;
}

const rssBytes = (pid: number) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) * 1024;

/** How a relay process is started. */
export interface RelayVariant {
  name: string;
  /** argv after `node`. */
  args: string[];
  /** Started with --expose-gc: a full GC (`/healthz?gc`) before each RSS reading. */
  gc?: boolean;
}

/** The relay of one memory run: its process (the one that holds the sockets) and ports. */
interface RunningRelay {
  child: ChildProcess;
  /** The relay process itself (for `rendezvous relay`, the bundle the CLI started). */
  pid: number;
  port: number;
  health: number;
}

async function health(port: number, gc = false): Promise<{ parked: number; pid?: number }> {
  const res = await fetch(`http://127.0.0.1:${port}/healthz${gc ? '?gc' : ''}`);
  return (await res.json()) as { parked: number; pid?: number };
}

async function startRelay(
  variant: RelayVariant,
  env: NodeJS.ProcessEnv,
  children: ChildProcess[],
): Promise<RunningRelay> {
  const port = await freePort();
  const healthPort = await freePort();
  const child = spawnRaised(process.execPath, variant.args, {
    ...env,
    RELAY_BIND: '127.0.0.1',
    RELAY_PORT: String(port),
    RELAY_HTTP_PORT: 'off',
    RELAY_HEALTH_PORT: String(healthPort),
    RELAY_MAX_HANDSHAKES_PER_SOURCE: '1000000',
    RELAY_MAX_HANDSHAKES: '1000000',
  });
  children.push(child);
  let out = '';
  child.stdout?.on('data', (c: Buffer) => {
    out = (out + c.toString()).slice(-4000);
  });
  child.stderr?.on('data', (c: Buffer) => {
    out = (out + c.toString()).slice(-4000);
  });
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`${variant.name} exited ${child.exitCode}: ${out}`);
    try {
      const h = await health(healthPort);
      // The CLI path runs the bundle as its child: measure that process, not the launcher.
      return { child, pid: h.pid ?? (child.pid as number), port, health: healthPort };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`${variant.name} did not answer /healthz: ${out}`);
}

/**
 * Parker processes: each dials the cookies it is sent as `R<cookie>\n` and holds the sockets. A
 * park the relay refuses (`-ERR`, e.g. a store read that timed out under the flood) is dialled
 * again, as a hidden server would; after 5 refusals the parker reports it.
 */
const PARKER = `
const net = require('net');
const held = [];
let local;
let port;
const dial = (c, tries) => new Promise((resolve) => {
  const s = net.connect({ port, host: '127.0.0.1', localAddress: local }, () => { s.write('R' + c + '\\n'); resolve(); });
  let refused = false;
  const again = () => {
    if (refused) return;
    refused = true;
    s.destroy();
    if (tries >= 5) process.send({ error: 'park of a cookie refused 5 times' });
    else setTimeout(() => dial(c, tries + 1), 200);
  };
  s.on('data', again);
  s.on('close', again);
  s.on('error', () => { resolve(); again(); });
  held.push(s);
});
process.on('disconnect', () => process.exit(0));
process.on('message', async (m) => {
  local = m.local;
  port = m.port;
  for (let i = 0; i < m.cookies.length; i += 250) await Promise.all(m.cookies.slice(i, i + 250).map((c) => dial(c, 0)));
  process.send({ dialed: m.cookies.length });
});
`;

/** Parks `cookies` on the relay from parker processes, in steps the relay confirms. */
async function parkFrom(
  relay: RunningRelay,
  cookies: string[],
  children: ChildProcess[],
  already = 0,
): Promise<ChildProcess[]> {
  // One parker holds at most its descriptor limit less some slack, and one source address at most
  // the ephemeral port range (about 28,000 on Linux): past that each parker dials from its own
  // 127.0.0.x. Not below it: a socket bound to a source address holds its port against every
  // other connection of the machine (connect() skips ports taken by bind()), and 15,000 of them
  // starve everything else of ports (EADDRNOTAVAIL).
  const per = Math.min(20_000, hardFdLimit() - 500);
  const spread = already + cookies.length > 20_000;
  const parkers: ChildProcess[] = [];
  let failure: Error | undefined;
  for (let i = 0; i * per < cookies.length; i++) {
    const child = spawnRaised(process.execPath, ['-e', PARKER], {});
    children.push(child);
    parkers.push(child);
    child.on('message', (m: { error?: string }) => {
      if (m.error) failure = new Error(`parker: ${m.error}`);
    });
    const mine = cookies.slice(i * per, (i + 1) * per);
    // Steps of 1,000 confirmed by the relay's own count: a flood of parks faster than the store
    // answers would only measure refusals.
    for (let j = 0; j < mine.length; j += 1_000) {
      const step = mine.slice(j, j + 1_000);
      child.send({ port: relay.port, local: spread ? `127.0.0.${10 + i}` : undefined, cookies: step });
      const want = already + i * per + j + step.length;
      for (let k = 0; k < 480 && (await health(relay.health)).parked < want; k++) {
        if (failure) throw failure;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }
  return parkers;
}

/** Waits until the relay itself reports `n` parked; throws (loudly) when it never does. */
async function expectParked(relay: RunningRelay, n: number, what: string): Promise<void> {
  let last = -1;
  for (let i = 0; i < 240; i++) {
    last = (await health(relay.health)).parked;
    if (last === n) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(
    `${what}: the relay reports ${last} parked sockets, the bench parked ${n}: RSS would be meaningless`,
  );
}

/** `n` registered hidden servers, written straight to the store (no code check needed to park). */
export async function registerMany(store: Store, n: number, tag: string): Promise<string[]> {
  const out: string[] = [];
  const now = Math.floor(Date.now() / 1000);
  for (let i = 0; i < n; i += 50) {
    const batch = Array.from({ length: Math.min(50, n - i) }, () => newCookie());
    await Promise.all(
      batch.map((r, j) =>
        store.putRegistration({
          uuid: `bench-${tag}-${i + j}`,
          cookie: mobileCookieFor(r),
          cookieScheme: SPLIT_COOKIE_SCHEME,
          host: '127.0.0.1',
          port: 8899,
          registeredAt: now,
          expiresAt: now + 24 * 3600,
        }),
      ),
    );
    out.push(...batch);
  }
  return out;
}

function stopAll(procs: ChildProcess[]): void {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
}

/**
 * One memory run in a fresh relay process, as the issue defines it: a 500-socket warm-up that
 * stays parked (the code paths have run, the SDK clients and first store reads are done), RSS
 * read, then `cookies.length` more parked: per socket = (RSS at warm-up + n − RSS after the
 * warm-up) / n, and the marginal cost of the second half alone.
 */
export async function parkedMemoryRun(
  variant: RelayVariant,
  env: NodeJS.ProcessEnv,
  cookies: string[],
  warmCookies: string[],
): Promise<{ perSocket: number; marginal: number }> {
  const children: ChildProcess[] = [];
  try {
    const relay = await startRelay(variant, env, children);
    const w = warmCookies.length;
    await parkFrom(relay, warmCookies, children);
    await expectParked(relay, w, `${variant.name} warm-up`);
    const rss = async () => {
      if (variant.gc) {
        await health(relay.health, true);
        await new Promise((r) => setTimeout(r, 300));
      }
      return rssBytes(relay.pid);
    };
    await new Promise((r) => setTimeout(r, 1_000));
    const base = await rss();
    const half = cookies.length >> 1;
    await parkFrom(relay, cookies.slice(0, half), children, w);
    await expectParked(relay, w + half, variant.name);
    await new Promise((r) => setTimeout(r, 1_000));
    const mid = await rss();
    await parkFrom(relay, cookies.slice(half), children, w + half);
    await expectParked(relay, w + cookies.length, variant.name);
    await new Promise((r) => setTimeout(r, 1_500));
    // Checked again right before the reading: nothing dropped while the relay settled.
    await expectParked(relay, w + cookies.length, variant.name);
    const full = await rss();
    return { perSocket: (full - base) / cookies.length, marginal: (full - mid) / (cookies.length - half) };
  } finally {
    stopAll(children);
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** DynamoDB operations that write (each replicated to every other region of a global table). */
const WRITE_OPS = new Set(['PutItem', 'UpdateItem', 'DeleteItem', 'BatchWriteItem', 'TransactWriteItems']);

/** What one store-at-rest run counted. */
export interface StoreAtRest {
  /** Requests per parked hidden server per minute, each write counted once (one region). */
  perKeyPerMinute: number;
  /** The same with each write counted `regions` times (a global table's replicated writes). */
  perKeyPerMinuteReplicated: number;
  /** Requests per relay per minute (one region): the cost of a relay at rest, whatever it holds. */
  perRelayPerMinute: number;
  byOp: Record<string, number>;
}

/**
 * Store requests per parked hidden server per minute while nothing happens: `cookies` hidden
 * servers parked over `relays` fresh relay processes of one cluster, every one of them reaching
 * the store through one counting proxy (heartbeats, change-notice polls, park-record writes: all
 * of it); the requests of `windowMs` after the parks settled, by operation. `regions`: how many
 * times each write is counted for the replicated figure.
 */
export async function storeAtRestRun(
  variant: RelayVariant,
  env: NodeJS.ProcessEnv,
  storeEndpoint: string,
  cookies: string[],
  windowMs: number,
  { relays = 2, regions = 3 }: { relays?: number; regions?: number } = {},
): Promise<StoreAtRest> {
  const children: ChildProcess[] = [];
  const proxy = await countingStoreProxy(storeEndpoint);
  try {
    const clusterEnv = {
      ...env,
      AWS_ENDPOINT_URL_DYNAMODB: proxy.endpoint,
      RELAY_CLUSTER_SECRET: 'bench-at-rest-cluster',
      RELAY_PEER_PORT: '0',
      RELAY_PEER_HOST: '127.0.0.1',
    };
    const running: RunningRelay[] = [];
    for (let i = 0; i < relays; i++) running.push(await startRelay(variant, clusterEnv, children));
    // An even share of the hidden servers on each relay, as behind the load balancer.
    const share = Math.ceil(cookies.length / relays);
    for (const [i, relay] of running.entries()) {
      const mine = cookies.slice(i * share, (i + 1) * share);
      await parkFrom(relay, mine, children);
      await expectParked(relay, mine.length, `${variant.name} store traffic`);
    }
    // The parks' own first writes and cookie checks are changes, not rest; so are the
    // registrations' change notices, whose uuids a relay re-checks each round while they are
    // young (NOTICE_WINDOW_MS after it first reads them).
    await new Promise((r) => setTimeout(r, NOTICE_WINDOW_MS + 5_000));
    proxy.counts.clear();
    await new Promise((r) => setTimeout(r, windowMs));
    for (const [i, relay] of running.entries())
      await expectParked(
        relay,
        cookies.slice(i * share, (i + 1) * share).length,
        `${variant.name} store traffic`,
      );
    const byOp = Object.fromEntries(proxy.counts);
    const total = Object.values(byOp).reduce((a, b) => a + b, 0);
    const writes = Object.entries(byOp)
      .filter(([op]) => WRITE_OPS.has(op))
      .reduce((a, [, n]) => a + n, 0);
    const minutes = windowMs / 60_000;
    return {
      perKeyPerMinute: total / cookies.length / minutes,
      perKeyPerMinuteReplicated: (total + (regions - 1) * writes) / cookies.length / minutes,
      perRelayPerMinute: total / relays / minutes,
      byOp,
    };
  } finally {
    stopAll(children);
    proxy.close();
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** Builds dist/ when the bundle is missing. */
export function ensureBundle(root: string): void {
  try {
    readFileSync(join(root, 'dist/relay.mjs'));
  } catch {
    execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: root, stdio: 'ignore' });
  }
}
