/**
 * The registration group of `npm run bench` (`--only registration`): PUT and GET latency and
 * throughput through the local API Gateway adapter, 8 requests in flight, each checked for a 200;
 * store round trips per PUT, GET and CONNECT, sequential and total, and an away-region PUT's
 * cross-region ones (bench/store-trips.ts, a store that adds 20 ms per request);
 * then the size of each Lambda bundle and how long a fresh node takes to import it, and how long
 * the relay takes from its process start to "relay listening" (the container's start, less Docker).
 */
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { currentCode } from '../core/totp.js';
import { provisionIdentity } from '../server/identities.js';
import { type GroupContext, percentile, ROOT } from './harness.js';
import { type Service, startRelayProcess } from './service.js';
import { countStoreTrips } from './store-trips.js';

/** The relay should be listening this soon after its process starts (a task replaced under load). */
export const RELAY_START_TARGET_MS = 2_000;

/** `n` fresh identities registered (PUT) then looked up (GET), `concurrency` at a time. */
async function runRegistration(service: Service, n: number, concurrency: number) {
  const { store, apiUrl } = service;
  const stamp = Date.now();
  // Provisioned 20 at a time: all at once, a loaded machine's store timed out (1 s to connect).
  const ids: Awaited<ReturnType<typeof provisionIdentity>>[] = [];
  for (let i = 0; i < n; i += 20)
    ids.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(20, n - i) }, (_, j) =>
          provisionIdentity(store, { uuid: `bench-reg-${stamp}-${i + j}` }),
        ),
      )),
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

/**
 * A fresh node importing `file`: wall time, and the CPU time the import took (user+sys, steadier
 * than wall time on a shared machine).
 */
function coldImport(file: string): { wall: number; cpu: number } {
  const out = execFileSync(process.execPath, [
    '--input-type=module',
    '-e',
    `const c = process.cpuUsage(); const t = performance.now(); await import(${JSON.stringify(file)}); const w = performance.now() - t; const u = process.cpuUsage(c); console.log(w, (u.user + u.system) / 1000);`,
  ]);
  const [wall, cpu] = out.toString().trim().split(' ').map(Number);
  return { wall: wall as number, cpu: cpu as number };
}

/** The registration group: the API's PUT and GET, then the Lambda bundles' size and cold import. */
export async function benchRegistration(ctx: GroupContext, service: Service): Promise<void> {
  const { add, runs } = ctx;
  // Store round trips per request, with 20 ms added to each store request (bench/store-trips.ts).
  const trips = await countStoreTrips(ctx.quick ? 5 : 10, 20);
  const ops = (o: Record<string, number>, n: number) =>
    Object.entries(o)
      .map(([k, v]) => `${k} ${(v / n).toFixed(1)}`)
      .join(', ');
  for (const [label, t] of [
    ['PUT (code, first from its address)', trips.put],
    ['PUT (code, from an address that registered it)', trips.putAgain],
    ['PUT (one-time proof)', trips.putProof],
    ['GET', trips.get],
    ['CONNECT (relay HTTP-specific auth)', trips.connect],
    ['away-region PUT, cross-region', trips.awayPut],
    ['away-region PUT, local replica', trips.awayPut.local],
  ] as const) {
    add(`store round trips per ${label}: sequential`, t.sequential, 'trips');
    add(`store round trips per ${label}: total`, t.total, 'requests');
    console.error(`bench: ${label} store requests per request: ${ops(t.ops, t.total.length)}`);
  }
  const reg = {
    putP50: [] as number[],
    putP99: [] as number[],
    putRps: [] as number[],
    getP50: [] as number[],
    getP99: [] as number[],
    getRps: [] as number[],
  };
  for (let r = 0; r < runs && ctx.timeLeft(); r++) {
    const x = await runRegistration(service, ctx.quick ? 200 : 500, 8);
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
  for (const fn of ['register', 'lookup']) {
    const file = join(ROOT, `dist/functions/${fn}.mjs`);
    add(`lambda bundle size: ${fn}`, [statSync(file).size / 1000], 'KB');
    // More runs than other figures: a fresh node per run, and the spread is what is asked for.
    const imports = Array.from({ length: runs * 2 + 1 }, () => coldImport(file));
    add(
      `lambda cold import: ${fn}`,
      imports.map((i) => i.wall),
      'ms',
    );
    add(
      `lambda cold import CPU: ${fn}`,
      imports.map((i) => i.cpu),
      'ms',
    );
  }
  // Start to "relay listening", as deployed (the bundle, the Dockerfile's node flags): a target,
  // not a test assertion, since a busy machine stretches it (the container suite only logs it).
  const starts: number[] = [];
  for (let r = 0; r < runs && ctx.timeLeft(); r++) {
    const t0 = process.hrtime.bigint();
    const relay = await startRelayProcess(service);
    starts.push(Number(process.hrtime.bigint() - t0) / 1e6);
    relay.child.kill('SIGKILL');
  }
  if (starts.length) {
    add('relay start to listening (production bundle)', starts, 'ms');
    const median = [...starts].sort((a, b) => a - b)[Math.floor(starts.length / 2)] as number;
    if (median > RELAY_START_TARGET_MS)
      console.warn(`relay start ${median.toFixed(0)} ms is over its ${RELAY_START_TARGET_MS} ms target`);
  }
}
