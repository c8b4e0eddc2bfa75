/**
 * The throughput group of `npm run bench` (`--only throughput`): MB/s and the forwarding process's
 * CPU per GiB over 1 and 8 parallel streams, through our relay (a paired rendezvous, mobile →
 * hidden) and through what people would use instead (a naive Node pipe, socat, nginx stream),
 * interleaved run by run, each into a sink that counts what arrived.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mobileCookieFor } from '../server/cookies.js';
import {
  cpuSeconds,
  dial,
  freePort,
  type GroupContext,
  spawnReady,
  track,
  trackProcess,
  waitListening,
} from './harness.js';
import { park, type RelayProcess, registerCookie, type Service } from './service.js';

/** A forwarding process measured beside the relay. */
export interface Forwarder {
  name: string;
  pid: number;
  /** Port that forwards to the sink (the forwarders) — or undefined for our relay. */
  port?: number;
}

/** The sink every stream ends in: a server that counts the bytes it received. */
export type Sink = { port: number; server: Server; received: () => number };

/** A sink server: counts bytes, reports when `expect` bytes arrived on all streams. */
export async function startSink(): Promise<Sink> {
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

/** The forwarders found on this machine, each listening and forwarding to `sinkPort`. */
export async function startForwarders(sinkPort: number): Promise<Forwarder[]> {
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
    trackProcess(socat);
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
    trackProcess(nginx);
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

/** One throughput run through a forwarder: `streams` parallel streams of `bytes` each. */
async function runForwarder(f: Forwarder, sink: Sink, streams: number, bytes: number) {
  const sockets = await Promise.all(Array.from({ length: streams }, () => dial(f.port as number)));
  const base = sink.received();
  const cpu0 = cpuSeconds(f.pid);
  const want = base + streams * bytes;
  const secs = await pushStreams(sockets, bytes, () => sink.received() >= want);
  const cpu = cpuSeconds(f.pid) - cpu0;
  for (const s of sockets) s.destroy();
  const gib = (streams * bytes) / 2 ** 30;
  return { mbps: (streams * bytes) / 1e6 / secs, cpuPerGiB: cpu / gib };
}

/** One throughput run through our relay: pair `streams` rendezvous, then stream mobile → hidden. */
async function runRelay(relay: RelayProcess, cookie: string, streams: number, bytes: number) {
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
  const secs = await pushStreams(mobiles, bytes, () => received >= streams * bytes);
  const cpu = cpuSeconds(relay.pid) - cpu0;
  for (const s of [...mobiles, ...hiddens]) s.destroy();
  const gib = (streams * bytes) / 2 ** 30;
  return { mbps: (streams * bytes) / 1e6 / secs, cpuPerGiB: cpu / gib };
}

/** The throughput group: relay and forwarders, 1 and 8 streams, interleaved after a warm-up pass. */
export async function benchThroughput(
  ctx: GroupContext,
  service: Service,
  relay: RelayProcess,
  sink: Sink,
  forwarders: Forwarder[],
): Promise<void> {
  const streamBytes = (ctx.quick ? 128 : 512) * 2 ** 20;
  for (const streams of [1, 8]) {
    const relayCookie = await registerCookie(service, `bench-stream-${streams}`);
    const contenders: Array<{ name: string; run: () => Promise<{ mbps: number; cpuPerGiB: number }> }> = [
      { name: 'rendezvous relay', run: () => runRelay(relay, relayCookie, streams, streamBytes) },
      ...forwarders.map((f) => ({ name: f.name, run: () => runForwarder(f, sink, streams, streamBytes) })),
    ];
    const results = new Map<string, { mbps: number[]; cpu: number[] }>();
    // A warm-up pass, not counted: a fresh relay process first runs in V8's interpreter and grows
    // its heap and its allocator's arena, which no later gigabyte pays for again.
    for (const c of contenders) await c.run();
    for (let r = 0; r < ctx.runs && ctx.timeLeft(); r++) {
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
      ctx.add(`throughput ${streams} stream${streams > 1 ? 's' : ''}: ${name}`, v.mbps, 'MB/s');
      ctx.add(`cpu per GiB ${streams} stream${streams > 1 ? 's' : ''}: ${name}`, v.cpu, 's/GiB');
    }
  }
}
