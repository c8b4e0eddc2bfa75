/**
 * `npm run bench [-- --quick]`: the relay and the registration path, measured side by side with
 * what people would use instead, in one run, on real sockets on 127.0.0.1. Every process under
 * test is a child; its CPU comes from /proc/<pid>/stat (user+sys), steadier on a shared 2-core
 * machine than wall-clock throughput. Bounded in count and time; stops by itself. Prints a table
 * and writes bench/results/latest.json.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { containerMallocEnv } from '../cli/relay-exec.js';
import { currentCode } from '../core/totp.js';
import { mobileCookieFor } from '../server/cookies.js';
import { provisionIdentity } from '../server/identities.js';
import { Store } from '../server/store/index.js';
import { benchClientPackage } from './client-package.js';
import {
  freePort,
  hardFdLimit,
  largestParkable,
  parkedMemoryRun,
  type RelayVariant,
  registerMany,
  storeAtRestRun,
} from './parked.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const QUICK = process.argv.includes('--quick');
/** `--only throughput|pairing|memory|store|registration|client`: one group, for iterating on it. */
const ONLY = process.argv[process.argv.indexOf('--only') + 1];
const want = (group: string) => !process.argv.includes('--only') || ONLY === group;
const RUNS = QUICK ? 3 : 5;
const STREAM_BYTES = (QUICK ? 128 : 512) * 2 ** 20;
const PAIRINGS = QUICK ? 600 : 2_000;
const PARKED = 10_000;
/** Parked sockets per hidden server in the memory runs. */
const SOCKETS_PER_SERVER = 10;
const CLK_TCK = 100;
/** A figure whose max/min exceeds this is flagged (⚠ in the table, a warning on stderr). */
const SPREAD_WARNING = 1.5;
/** Node flags from relay/Dockerfile's ENTRYPOINT (between "node" and the script). */
const RELAY_NODE_FLAGS = (() => {
  const entry =
    /^ENTRYPOINT \[(.*)\]$/m.exec(readFileSync(join(ROOT, 'relay/Dockerfile'), 'utf8'))?.[1] ?? '';
  return (JSON.parse(`[${entry}]`) as string[]).filter((a) => a.startsWith('--'));
})();
/** MALLOC_* settings from relay/Dockerfile's ENV, so the relay is measured with its allocator as deployed. */
const RELAY_MALLOC_ENV = containerMallocEnv();
const started = Date.now();
// A full run's memory group alone takes several minutes (fresh relays, 25,000 sockets parked per
// round of sizes): the deadline bounds a run that hangs, not a normal one.
const DEADLINE = started + (QUICK ? 360_000 : 1_800_000);

// ---------------------------------------------------------------- helpers

/**
 * user+sys CPU seconds of a process and its live children (socat forks one per connection), plus
 * what its reaped children used (cutime+cstime).
 */
function cpuSeconds(pid: number): number {
  let total = 0;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    total += (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / CLK_TCK;
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const kids = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      for (const kid of kids ? kids.split(' ') : []) total += cpuSeconds(Number(kid));
    }
  } catch {
    // The process (or a child) is gone.
  }
  return total;
}

/** A summary over runs. */
interface Figure {
  median: number;
  min: number;
  max: number;
  runs: number;
  unit: string;
}
function summary(values: number[], unit: string): Figure {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median =
    sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return {
    median,
    min: sorted[0] as number,
    max: sorted[sorted.length - 1] as number,
    runs: values.length,
    unit,
  };
}
const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
};

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(s));
    s.setNoDelay(true);
    s.once('error', reject);
  });
}

/** Spawns a child and waits until its output matches `ready`. */
function spawnReady(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  ready: RegExp,
): Promise<{ child: ChildProcess; out: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let started = false;
    const t = setTimeout(() => reject(new Error(`${cmd} did not start: ${out}`)), 30_000);
    const on = (c: Buffer) => {
      // BENCH_DEBUG keeps every child's output (e.g. --trace-gc) in /tmp/bench-child-<pid>.log.
      if (process.env.BENCH_DEBUG) appendFileSync(`/tmp/bench-child-${child.pid}.log`, c);
      out += c.toString();
      // Only until ready: a regex over the whole growing output (a relay logs a line per
      // rendezvous) would flatten it on every chunk, slowing this process and, through the full
      // pipe, the relay writing to it.
      if (!started && ready.test(out)) {
        started = true;
        clearTimeout(t);
        resolve({ child, out: () => out });
      }
    };
    child.stdout?.on('data', on);
    child.stderr?.on('data', on);
    child.once('exit', (code) => reject(new Error(`${cmd} exited ${code}: ${out}`)));
  });
}

const children: ChildProcess[] = [];
function track<T extends { child: ChildProcess }>(x: T): T {
  children.push(x.child);
  return x;
}
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** A sink server: counts bytes, reports when `expect` bytes arrived on all streams. */
async function startSink(): Promise<{ port: number; server: Server; received: () => number }> {
  let total = 0;
  const server = createServer((s) => {
    s.on('data', (c: Buffer) => {
      total += c.length;
    });
    s.on('error', () => s.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, server, received: () => total };
}

/** Pushes `bytes` over each of `sockets` (respecting backpressure) and waits until `done()`. */
async function pushStreams(sockets: Socket[], bytes: number, done: () => boolean): Promise<number> {
  const chunk = randomBytes(256 * 1024);
  const t0 = process.hrtime.bigint();
  await Promise.all(
    sockets.map(async (s) => {
      let sent = 0;
      while (sent < bytes) {
        sent += chunk.length;
        if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
      }
    }),
  );
  while (!done()) await new Promise((r) => setImmediate(r));
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

// ---------------------------------------------------------------- the service under test

const table = 'rendezvous';
let storeEndpoint = '';
let apiUrl = '';
let store: Store;
const SECRET = 'bench-cluster-secret';

async function startService() {
  execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: ROOT, stdio: 'ignore' });
  const dev = track(
    await spawnReady(
      process.execPath,
      [
        join(ROOT, 'bin/rendezvous.js'),
        'dev',
        '--memory',
        '--api-port',
        '0',
        '--relay-port',
        '0',
        '--http-port',
        '0',
        '--store-port',
        '0',
      ],
      { POWERTOOLS_LOG_LEVEL: 'ERROR' },
      /^ready$/m,
    ),
  );
  storeEndpoint = /AWS_ENDPOINT_URL_DYNAMODB=(\S+)/.exec(dev.out())?.[1] as string;
  apiUrl = /RENDEZVOUS_API=(\S+)/.exec(dev.out())?.[1] as string;
  store = new Store({ table, endpoint: storeEndpoint, region: 'local' });
  return dev;
}

/** A relay process from the production bundle (dist/relay.mjs), as the container runs it. */
async function startRelayProcess(): Promise<{ child: ChildProcess; pid: number; port: number }> {
  const port = await freePort();
  const r = track(
    await spawnReady(
      process.execPath,
      // BENCH_RELAY_FLAGS: node flags for the relays only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
      // The node flags of relay/Dockerfile's ENTRYPOINT, so the relay is measured as deployed.
      [
        ...RELAY_NODE_FLAGS,
        ...(process.env.BENCH_RELAY_FLAGS?.split(' ').filter(Boolean) ?? []),
        join(ROOT, 'dist/relay.mjs'),
      ],
      {
        ...RELAY_MALLOC_ENV,
        AWS_ENDPOINT_URL_DYNAMODB: storeEndpoint,
        AWS_REGION: 'local',
        RENDEZVOUS_TABLE: table,
        RELAY_BIND: '127.0.0.1',
        RELAY_PORT: String(port),
        RELAY_HTTP_PORT: 'off',
        RELAY_PEER_PORT: '0',
        RELAY_PEER_HOST: '127.0.0.1',
        RELAY_CLUSTER_SECRET: SECRET,
        RELAY_MAX_PARKED: String(PARKED + 100),
        RELAY_MAX_HANDSHAKES_PER_SOURCE: '100000',
        RELAY_MAX_HANDSHAKES: '100000',
      },
      /relay listening/,
    ),
  );
  return { child: r.child, pid: r.child.pid as number, port };
}

async function registerCookie(uuid: string): Promise<string> {
  const id = await provisionIdentity(store, { uuid });
  const res = await fetch(`${apiUrl}/?uuid=${uuid}&response=${currentCode(id)}`, { method: 'PUT' });
  return ((await res.json()) as { result: { cookie: string } }).result.cookie.slice(1);
}

/** Parks one raw hidden socket on `port` with cookie `c`. */
async function park(port: number, c: string): Promise<Socket> {
  const s = await dial(port);
  s.write(`R${c}\n`);
  return s;
}

// ---------------------------------------------------------------- 1. throughput

interface Forwarder {
  name: string;
  pid: number;
  /** Port that forwards to the sink (the forwarders) — or undefined for our relay. */
  port?: number;
}

async function startForwarders(sinkPort: number): Promise<Forwarder[]> {
  const out: Forwarder[] = [];
  const naivePort = await freePort();
  const naive = track(
    await spawnReady(
      process.execPath,
      [
        '-e',
        `const net=require('net');net.createServer(a=>{const b=net.connect(${sinkPort},'127.0.0.1');a.pipe(b).pipe(a);a.on('error',()=>b.destroy());b.on('error',()=>a.destroy());}).listen(${naivePort},'127.0.0.1',()=>console.log('ready'))`,
      ],
      {},
      /ready/,
    ),
  );
  out.push({ name: 'naive Node pipe', pid: naive.child.pid as number, port: naivePort });
  if (has('socat')) {
    const p = await freePort();
    const socat = spawn('socat', [
      '-b',
      '65536',
      `TCP-LISTEN:${p},bind=127.0.0.1,fork,reuseaddr`,
      `TCP:127.0.0.1:${sinkPort}`,
    ]);
    children.push(socat);
    await waitListening(p);
    out.push({ name: 'socat -b 65536', pid: socat.pid as number, port: p });
  }
  const streamModule = [
    '/usr/lib/nginx/modules/ngx_stream_module.so',
    '/usr/lib64/nginx/modules/ngx_stream_module.so',
  ].find((f) => {
    try {
      return statSync(f).isFile();
    } catch {
      return false;
    }
  });
  if (has('nginx')) {
    const p = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'bench-nginx-'));
    writeFileSync(
      join(dir, 'nginx.conf'),
      `${streamModule ? `load_module ${streamModule};\n` : ''}daemon off; master_process off; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 4096; }
stream { server { listen 127.0.0.1:${p}; proxy_pass 127.0.0.1:${sinkPort}; proxy_buffer_size 64k; } }\n`,
    );
    const nginx = spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir]);
    children.push(nginx);
    await waitListening(p);
    out.push({ name: 'nginx stream', pid: nginx.pid as number, port: p });
  }
  return out;
}

function has(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function waitListening(port: number) {
  for (let i = 0; i < 100; i++) {
    try {
      (await dial(port)).destroy();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

/** One throughput run through a forwarder: `streams` parallel streams of STREAM_BYTES each. */
async function runForwarder(f: Forwarder, sink: Awaited<ReturnType<typeof startSink>>, streams: number) {
  const sockets = await Promise.all(Array.from({ length: streams }, () => dial(f.port as number)));
  const base = sink.received();
  const cpu0 = cpuSeconds(f.pid);
  const want = base + streams * STREAM_BYTES;
  const secs = await pushStreams(sockets, STREAM_BYTES, () => sink.received() >= want);
  const cpu = cpuSeconds(f.pid) - cpu0;
  for (const s of sockets) s.destroy();
  const gib = (streams * STREAM_BYTES) / 2 ** 30;
  return { mbps: (streams * STREAM_BYTES) / 1e6 / secs, cpuPerGiB: cpu / gib };
}

/** One throughput run through our relay: pair `streams` rendezvous, then stream mobile → hidden. */
async function runRelay(relay: { pid: number; port: number }, cookie: string, streams: number) {
  let received = 0;
  const hiddens = await Promise.all(Array.from({ length: streams }, () => park(relay.port, cookie)));
  for (const h of hiddens) h.on('data', (c: Buffer) => (received += c.length));
  await new Promise((r) => setTimeout(r, 100));
  const mobiles = await Promise.all(
    Array.from({ length: streams }, async () => {
      const m = await dial(relay.port);
      m.write(`I${mobileCookieFor(cookie)}\n`);
      await new Promise((r) => m.once('data', r));
      return m;
    }),
  );
  received = 0;
  const cpu0 = cpuSeconds(relay.pid);
  const secs = await pushStreams(mobiles, STREAM_BYTES, () => received >= streams * STREAM_BYTES);
  const cpu = cpuSeconds(relay.pid) - cpu0;
  for (const s of [...mobiles, ...hiddens]) s.destroy();
  const gib = (streams * STREAM_BYTES) / 2 ** 30;
  return { mbps: (streams * STREAM_BYTES) / 1e6 / secs, cpuPerGiB: cpu / gib };
}

// ---------------------------------------------------------------- 2. pairing

/**
 * A minimal Node relay for the same generic protocol (`R<c>` parks, `I<c>` pairs, `+OK` to both,
 * `pipe` both ways; no cookie check, no limits, no cluster): the floor a Node relay cannot go
 * below, run side by side as the pairing baseline (the original relay cannot run here).
 */
const MINIMAL_RELAY = `const net=require('net');const parked=new Map();
net.createServer({allowHalfOpen:true},(s)=>{s.setNoDelay(true);s.on('error',()=>s.destroy());let buf='';
const onData=(d)=>{buf+=d.toString('latin1');const nl=buf.indexOf('\\n');if(nl<0)return;s.off('data',onData);
const key=buf.slice(1,nl);if(buf[0]==='R'){const l=parked.get(key)||[];l.push(s);parked.set(key,l);
s.once('close',()=>{const i=l.indexOf(s);if(i>=0)l.splice(i,1);});return;}
const h=(parked.get(key)||[]).shift();if(!h)return s.end('-ERR none\\n');
h.write('+OK\\n');s.write('+OK\\n');h.pipe(s);s.pipe(h);h.on('error',()=>s.destroy());};
s.on('data',onData);}).listen(0,'127.0.0.1',function(){console.log('port '+this.address().port)});`;

async function startMinimalRelay(): Promise<{ pid: number; port: number; minimal: true }> {
  const r = track(
    await spawnReady(process.execPath, [...RELAY_NODE_FLAGS, '-e', MINIMAL_RELAY], {}, /port \d+/),
  );
  return { pid: r.child.pid as number, port: Number(/port (\d+)/.exec(r.out())?.[1]), minimal: true };
}

async function runPairings(
  parkAt: { pid: number; port: number; minimal?: boolean },
  mobileAt: { pid: number; port: number },
  inFlight: number,
) {
  const cookie = await registerCookie(`bench-pair-${inFlight}-${parkAt.port}-${mobileAt.port}-${Date.now()}`);
  // The minimal relay checks nothing: it keys its parks by the line as sent.
  const parkCookie = parkAt.minimal ? mobileCookieFor(cookie) : cookie;
  const hiddens = await Promise.all(Array.from({ length: PAIRINGS }, () => park(parkAt.port, parkCookie)));
  for (const h of hiddens) {
    h.on('data', () => h.end());
    h.on('error', () => {});
  }
  await new Promise((r) => setTimeout(r, 500));
  const pids = [...new Set([parkAt.pid, mobileAt.pid])];
  const cpu0 = pids.map(cpuSeconds);
  const latencies: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < PAIRINGS) {
      next++;
      const t0 = process.hrtime.bigint();
      const m = await dial(mobileAt.port);
      m.write(`I${mobileCookieFor(cookie)}\n`);
      await new Promise((r) => m.once('data', r));
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      m.end();
      await new Promise((r) => m.once('close', r));
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  await new Promise((r) => setTimeout(r, 200));
  const cpu = pids.map(cpuSeconds).reduce((a, b, i) => a + b - (cpu0[i] as number), 0);
  for (const h of hiddens) h.destroy();
  return {
    cpuUsPerPairing: (cpu * 1e6) / PAIRINGS,
    p50: percentile(latencies, 50),
    p90: percentile(latencies, 90),
    p99: percentile(latencies, 99),
    p999: percentile(latencies, 99.9),
  };
}

// ---------------------------------------------------------------- 3. memory and store at rest (bench/parked.ts)

/** The relay as deployed (bundle + Dockerfile flags) and as operators start it outside a container. */
function relayVariants(): RelayVariant[] {
  // BENCH_RELAY_BUNDLE: another build of the relay (e.g. a checkout of main) measured the same way.
  const bundle = process.env.BENCH_RELAY_BUNDLE ?? join(ROOT, 'dist/relay.mjs');
  return [
    { name: 'bundle', args: [...RELAY_NODE_FLAGS, bundle] },
    // What a parked socket holds: the same, read after a full GC (V8 collects when it likes).
    { name: 'bundle, after a full GC', args: [...RELAY_NODE_FLAGS, '--expose-gc', bundle], gc: true },
    { name: 'rendezvous relay', args: [join(ROOT, 'bin/rendezvous.js'), 'relay'] },
  ];
}

function relayEnv(endpoint: string): NodeJS.ProcessEnv {
  return {
    AWS_ENDPOINT_URL_DYNAMODB: endpoint,
    AWS_REGION: 'local',
    RENDEZVOUS_TABLE: table,
    RELAY_MAX_PARKED: '64',
  };
}

// ---------------------------------------------------------------- 4. registration

async function runRegistration(n: number, concurrency: number) {
  const stamp = Date.now();
  const ids = await Promise.all(
    Array.from({ length: n }, (_, i) => provisionIdentity(store, { uuid: `bench-reg-${stamp}-${i}` })),
  );
  const timed = async (jobs: Array<() => Promise<void>>) => {
    const lat: number[] = [];
    let next = 0;
    const t0 = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < jobs.length) {
          const job = jobs[next++] as () => Promise<void>;
          const s = process.hrtime.bigint();
          await job();
          lat.push(Number(process.hrtime.bigint() - s) / 1e6);
        }
      }),
    );
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    return { p50: percentile(lat, 50), p99: percentile(lat, 99), rps: jobs.length / secs };
  };
  const put = await timed(
    ids.map((id) => async () => {
      const res = await fetch(`${apiUrl}/?uuid=${id.uuid}&response=${currentCode(id)}`, { method: 'PUT' });
      if (res.status !== 200) throw new Error(`PUT ${res.status}`);
      await res.arrayBuffer();
    }),
  );
  const get = await timed(
    ids.map((id) => async () => {
      const res = await fetch(`${apiUrl}/?uuid=${id.uuid}`);
      if (res.status !== 200) throw new Error(`GET ${res.status}`);
      await res.arrayBuffer();
    }),
  );
  return { put, get };
}

function coldImport(file: string): number {
  const out = execFileSync(process.execPath, [
    '--input-type=module',
    '-e',
    `const t = performance.now(); await import(${JSON.stringify(file)}); console.log(performance.now() - t);`,
  ]);
  return Number(out.toString().trim());
}

// ---------------------------------------------------------------- main

async function main() {
  const figures: Record<string, Figure> = {};
  const add = (name: string, values: number[], unit: string) => {
    // A group cut short by the deadline has no runs: say so rather than print NaN.
    if (values.length === 0) console.error(`bench: no run of "${name}" before the deadline`);
    else figures[name] = summary(values, unit);
  };
  const timeLeft = () => Date.now() < DEADLINE;
  console.error(`bench: ${QUICK ? 'quick' : 'full'} run, ${RUNS} runs per figure`);
  await startService();
  const relayA = await startRelayProcess();
  const relayB = await startRelayProcess();
  const sink = await startSink();
  const forwarders = await startForwarders(sink.port);
  if (process.env.BENCH_DEBUG)
    console.error(`pids relay=${relayA.pid} ${forwarders.map((f) => `${f.name}=${f.pid}`).join(' ')}`);

  // 1. throughput
  for (const streams of want('throughput') ? [1, 8] : []) {
    const relayCookie = await registerCookie(`bench-stream-${streams}`);
    const contenders: Array<{ name: string; run: () => Promise<{ mbps: number; cpuPerGiB: number }> }> = [
      { name: 'rendezvous relay', run: () => runRelay(relayA, relayCookie, streams) },
      ...forwarders.map((f) => ({ name: f.name, run: () => runForwarder(f, sink, streams) })),
    ];
    const results = new Map<string, { mbps: number[]; cpu: number[] }>();
    // A warm-up pass, not counted: a fresh relay process first runs in V8's interpreter and grows
    // its heap and its allocator's arena, which no later gigabyte pays for again.
    for (const c of contenders) await c.run();
    for (let r = 0; r < RUNS && timeLeft(); r++) {
      // Interleaved, so drift in the machine's load hits every contender alike.
      for (const c of contenders) {
        const x = await c.run();
        const slot = results.get(c.name) ?? { mbps: [], cpu: [] };
        slot.mbps.push(x.mbps);
        slot.cpu.push(x.cpuPerGiB);
        results.set(c.name, slot);
      }
    }
    for (const [name, v] of results) {
      add(`throughput ${streams} stream${streams > 1 ? 's' : ''}: ${name}`, v.mbps, 'MB/s');
      add(`cpu per GiB ${streams} stream${streams > 1 ? 's' : ''}: ${name}`, v.cpu, 's/GiB');
    }
  }

  // 2. pairing (one warm-up pass per contender first: the first pairings of a fresh process run
  // in V8's interpreter and would count JIT compilation as pairing cost)
  const minimal = want('pairing') ? await startMinimalRelay() : undefined;
  const pairingContenders = minimal
    ? ([
        ['local', relayA, relayA],
        ['cross-relay', relayA, relayB],
        ['minimal Node relay', minimal, minimal],
      ] as const)
    : [];
  for (const [, parkAt, mobileAt] of pairingContenders) await runPairings(parkAt, mobileAt, 50);
  for (const inFlight of pairingContenders.length ? [1, 50] : []) {
    const results = new Map<string, Record<'cpu' | 'p50' | 'p90' | 'p99' | 'p999', number[]>>();
    for (let r = 0; r < RUNS && timeLeft(); r++) {
      // Interleaved, like the throughput runs, so drift in the machine's load hits all alike.
      for (const [label, parkAt, mobileAt] of pairingContenders) {
        const x = await runPairings(parkAt, mobileAt, inFlight);
        const slot = results.get(label) ?? { cpu: [], p50: [], p90: [], p99: [], p999: [] };
        slot.cpu.push(x.cpuUsPerPairing);
        slot.p50.push(x.p50);
        slot.p90.push(x.p90);
        slot.p99.push(x.p99);
        slot.p999.push(x.p999);
        results.set(label, slot);
      }
    }
    for (const [label, v] of results) {
      add(`pairing ${label}, ${inFlight} in flight: relay CPU per pairing`, v.cpu, 'µs');
      add(`pairing ${label}, ${inFlight} in flight: connect to +OK p50`, v.p50, 'ms');
      add(`pairing ${label}, ${inFlight} in flight: connect to +OK p90`, v.p90, 'ms');
      add(`pairing ${label}, ${inFlight} in flight: connect to +OK p99`, v.p99, 'ms');
      add(`pairing ${label}, ${inFlight} in flight: connect to +OK p99.9`, v.p999, 'ms');
    }
  }

  // 3. memory: a fresh relay process per run, one socket per hidden server
  if (want('memory') || want('store')) {
    const hard = hardFdLimit();
    const large = Math.min(100_000, largestParkable(hard));
    const sizes = QUICK ? [PARKED] : [PARKED, large];
    // Ten sockets per hidden server (a pool of 10): the store, an in-process dynalite here, checks
    // a few hundred cookies a second, and one key per socket would make each run minutes long.
    const t0 = Date.now();
    const servers = await registerMany(store, Math.max(...sizes) / SOCKETS_PER_SERVER, `mem-${Date.now()}`);
    console.error(`bench: ${servers.length} hidden servers registered in ${Date.now() - t0} ms`);
    const warm = servers.slice(0, 50).flatMap((c) => Array<string>(SOCKETS_PER_SERVER).fill(c));
    if (large < 100_000)
      console.error(
        `bench: descriptor hard limit ${hard}: one relay holds at most ${large.toLocaleString('en')} parked (100,000 needs a hard limit of about 126,000)`,
      );
    for (const variant of want('memory') ? relayVariants() : []) {
      // The largest count for the bundle as deployed; the others at 10,000.
      for (const n of variant.name === 'bundle' ? sizes : [PARKED]) {
        const per: number[] = [];
        const marginal: number[] = [];
        const sockets = servers
          .slice(0, n / SOCKETS_PER_SERVER)
          .flatMap((c) => Array<string>(SOCKETS_PER_SERVER).fill(c));
        // At least one run even past the deadline: a memory figure is the point of this group.
        // The bundle as deployed gets the most runs; the others fewer (quick: one).
        const runs = variant.name === 'bundle' ? (QUICK ? 2 : 3) : QUICK ? 1 : 2;
        for (let r = 0; r < runs && (r === 0 || timeLeft()); r++) {
          const x = await parkedMemoryRun(variant, relayEnv(storeEndpoint), sockets, warm);
          per.push(x.perSocket);
          marginal.push(x.marginal);
        }
        const label = `memory (${variant.name}): RSS per parked socket, ${n.toLocaleString('en')} parked`;
        add(label, per, 'bytes');
        add(`${label}, second half only`, marginal, 'bytes');
      }
    }
    // 3b. store requests at rest, counted at the store
    const keys = Math.min(servers.length, QUICK ? 300 : 1_000);
    const rest: number[] = [];
    let byOp: Record<string, number> = {};
    for (let r = 0; r < (QUICK ? 1 : 2) && (r === 0 || timeLeft()) && want('store'); r++) {
      const x = await storeAtRestRun(
        relayVariants()[0] as RelayVariant,
        relayEnv(storeEndpoint),
        storeEndpoint,
        servers.slice(0, keys),
        QUICK ? 30_000 : 60_000,
      );
      rest.push(x.perKeyPerMinute);
      byOp = x.byOp;
    }
    if (rest.length) {
      add(`store requests at rest per parked hidden server per minute (${keys} parked)`, rest, 'req');
      console.error(`bench: store requests at rest, last run, by operation: ${JSON.stringify(byOp)}`);
    }
  }

  // 4. registration
  const reg = {
    putP50: [] as number[],
    putP99: [] as number[],
    putRps: [] as number[],
    getP50: [] as number[],
    getP99: [] as number[],
    getRps: [] as number[],
  };
  for (let r = 0; r < RUNS && timeLeft() && want('registration'); r++) {
    const x = await runRegistration(QUICK ? 200 : 500, 8);
    reg.putP50.push(x.put.p50);
    reg.putP99.push(x.put.p99);
    reg.putRps.push(x.put.rps);
    reg.getP50.push(x.get.p50);
    reg.getP99.push(x.get.p99);
    reg.getRps.push(x.get.rps);
  }
  if (reg.putP50.length) {
    add('registration PUT p50 (local adapter, 8 concurrent)', reg.putP50, 'ms');
    add('registration PUT p99', reg.putP99, 'ms');
    add('registration PUT throughput', reg.putRps, 'req/s');
    add('registration GET p50', reg.getP50, 'ms');
    add('registration GET p99', reg.getP99, 'ms');
    add('registration GET throughput', reg.getRps, 'req/s');
  }
  for (const fn of want('registration') ? ['register', 'lookup'] : []) {
    const file = join(ROOT, `dist/functions/${fn}.mjs`);
    add(`lambda bundle size: ${fn}`, [statSync(file).size / 1000], 'KB');
    add(
      `lambda cold import: ${fn}`,
      Array.from({ length: RUNS }, () => coldImport(file)),
      'ms',
    );
  }

  // 5. the client package (packed, installed into an empty folder)
  if (want('client'))
    for (const [name, f] of Object.entries(await benchClientPackage(RUNS))) add(name, f.values, f.unit);

  // ratios (medians)
  const m = (name: string) => figures[name]?.median ?? Number.NaN;
  const ratios: Record<string, number> = {};
  for (const streams of ['1 stream', '8 streams']) {
    for (const other of forwarders.map((f) => f.name)) {
      const key = other.split(' ')[0] as string;
      ratios[`cpu per GiB ${streams}: relay/${key}`] =
        m(`cpu per GiB ${streams}: rendezvous relay`) / m(`cpu per GiB ${streams}: ${other}`);
      ratios[`throughput ${streams}: relay/${key}`] =
        m(`throughput ${streams}: rendezvous relay`) / m(`throughput ${streams}: ${other}`);
    }
  }
  for (const inFlight of [1, 50]) {
    const at = (label: string, what: string) => m(`pairing ${label}, ${inFlight} in flight: ${what}`);
    ratios[`pairing CPU cross-relay/local (${inFlight} in flight)`] =
      at('cross-relay', 'relay CPU per pairing') / at('local', 'relay CPU per pairing');
    ratios[`pairing p50 cross-relay/local (${inFlight} in flight)`] =
      at('cross-relay', 'connect to +OK p50') / at('local', 'connect to +OK p50');
    ratios[`pairing CPU local/minimal Node relay (${inFlight} in flight)`] =
      at('local', 'relay CPU per pairing') / at('minimal Node relay', 'relay CPU per pairing');
    ratios[`pairing p99 local/minimal Node relay (${inFlight} in flight)`] =
      at('local', 'connect to +OK p99') / at('minimal Node relay', 'connect to +OK p99');
  }

  const result = {
    date: new Date().toISOString(),
    mode: QUICK ? 'quick' : 'full',
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      node: process.version,
      platform: process.platform,
    },
    seconds: Math.round((Date.now() - started) / 1000),
    figures,
    ratios,
  };
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  // A partial run (--only) must not overwrite the full results the README quotes.
  const file = process.argv.includes('--only') ? `only-${ONLY}.json` : 'latest.json';
  writeFileSync(join(ROOT, 'bench/results', file), `${JSON.stringify(result, null, 2)}\n`);

  const fmt = (n: number) =>
    Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : n.toFixed(2);
  // A wide spread means the runs disagree: the median alone would mislead, so say so.
  const wide = (f: Figure) => f.runs > 1 && f.min > 0 && f.max / f.min > SPREAD_WARNING;
  const rows = Object.entries(figures).map(
    ([name, f]) =>
      `| ${name} | ${fmt(f.median)} ${f.unit} | ${fmt(f.min)}–${fmt(f.max)}${wide(f) ? ' ⚠' : ''} | ${f.runs} |`,
  );
  for (const [name, f] of Object.entries(figures))
    if (wide(f))
      console.error(
        `bench: WARNING: "${name}" spread ${fmt(f.min)}–${fmt(f.max)} ${f.unit} (max/min ${fmt(f.max / f.min)} > ${SPREAD_WARNING}): do not quote its median alone`,
      );
  console.log(
    `\n${result.machine.cpus}× ${result.machine.model}, Node ${result.machine.node}, ${result.mode} run, ${result.seconds} s\n`,
  );
  console.log('| figure | median | min–max | runs |\n|---|---|---|---|');
  console.log(rows.join('\n'));
  if (Object.values(figures).some(wide))
    console.log(`\n⚠ max/min above ${SPREAD_WARNING}: the runs disagree, quote the range, not the median.`);
  console.log('\n| ratio (medians) | value |\n|---|---|');
  for (const [k, v] of Object.entries(ratios)) if (Number.isFinite(v)) console.log(`| ${k} | ${fmt(v)} |`);
  store.close();
  for (const c of children) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 1_500));
  for (const c of children) c.kill('SIGKILL');
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
});
