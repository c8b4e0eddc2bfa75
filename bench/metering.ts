/**
 * The metering group of `npm run bench` (`--only metering`): what metering per identity (issue
 * 30, relay/metering.ts) costs a relay, against the same bundle with `RELAY_METERING=off`, side
 * by side: both loaded at the same time, run after run, the ratio taken per run:
 *
 *   - relay CPU per pairing, 50 in flight (the pairing group's load: park, pair, re-park);
 *   - relay CPU per GiB spliced (one rendezvous carrying the bytes mobile → hidden);
 *   - store requests at rest, counted at a proxy in front of the store: idle parked hidden
 *     servers on a metering relay and on one without, over the same window.
 *
 * The metering relay flushes every second (60 times the default), so its flushes and their store
 * writes fall inside every window: an upper bound on what the default costs.
 */
import type { Socket } from 'node:net';
import { loadavg } from 'node:os';
import { silentLog } from '../core/log.js';
import { Meter } from '../relay/metering.js';
import type { RendezvousStart } from '../relay/telemetry.js';
import { mobileCookieFor } from '../server/cookies.js';
import { emptyTotals } from '../server/usage-types.js';
import { cpuSeconds, dial, type GroupContext } from './harness.js';
import { type Contender, runPairings } from './pairing.js';
import { park, type RelayProcess, registerCookie, type Service, startRelayProcess } from './service.js';
import { delayingStoreProxy } from './store-trips.js';

const SLOTS = 50;
const loadavg1 = () => Math.round((loadavg()[0] as number) * 10) / 10;
const FLUSH_MS = '1000';

/** Registers `n` hidden servers, four at a time (the API's per-source guess limits). */
async function registerN(service: Service, n: number, tag: string): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i += 4)
    out.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(4, n - i) }, (_, k) =>
          registerCookie(service, `bench-meter-${tag}-${i + k}-${Date.now()}`),
        ),
      )),
    );
  return out;
}

/** Relay CPU seconds to carry `bytes` mobile → hidden in one rendezvous on `relay` (the bandwidth group's too). */
export async function spliceRun(relay: RelayProcess, cookie: string, bytes: number): Promise<number> {
  const hidden = await park(relay.port, cookie);
  hidden.on('error', () => {});
  await new Promise((r) => setTimeout(r, 100));
  const mobile: Socket = await dial(relay.port);
  mobile.on('error', () => {});
  const ok = new Promise((r) => mobile.once('data', r));
  mobile.write(`I${mobileCookieFor(cookie)}\n`);
  await ok;
  let got = -4;
  const all = new Promise<void>((r) =>
    hidden.on('data', (c: Buffer) => {
      got += c.length;
      if (got >= bytes) r();
    }),
  );
  const cpu0 = cpuSeconds(relay.pid);
  const chunk = Buffer.alloc(1024 * 1024, 7);
  for (let sent = 0; sent < bytes; sent += chunk.length)
    if (!mobile.write(chunk)) await new Promise((r) => mobile.once('drain', r));
  await all;
  const cpu = cpuSeconds(relay.pid) - cpu0;
  mobile.destroy();
  hidden.destroy();
  return cpu;
}

/** Store requests a relay makes over `windowMs` with `cookies` parked and idle. */
async function atRestRun(
  service: Service,
  env: Record<string, string>,
  cookies: string[],
  windowMs: number,
): Promise<{ total: number; updates: number }> {
  const proxy = await delayingStoreProxy(service.storeEndpoint, 0);
  const relay = await startRelayProcess(service, {
    env: { ...env, AWS_ENDPOINT_URL_DYNAMODB: proxy.endpoint },
  });
  try {
    const sockets = await Promise.all(cookies.map((c) => park(relay.port, c)));
    for (const s of sockets) s.on('error', () => {});
    // Past the parks' own writes: the window holds only what the relay does at rest.
    await new Promise((r) => setTimeout(r, 3_000));
    const from = proxy.spans.length;
    await new Promise((r) => setTimeout(r, windowMs));
    const spans = proxy.spans.slice(from);
    for (const s of sockets) s.destroy();
    // A usage write is an UpdateItem: counted apart, beside the total.
    return { total: spans.length, updates: spans.filter((s) => s.op === 'UpdateItem').length };
  } finally {
    relay.child.kill('SIGTERM');
    proxy.close();
  }
}

/**
 * The meter's own bookkeeping, in this process (no sockets, nothing else on the CPU clock):
 * CPU µs per rendezvous (begin, a live read at a flush, end) over `n` rendezvous of 1,000
 * identities, flushed every 10,000 into a sink that answers at once; and the CPU of one real
 * usage write (the SDK's side of an UpdateItem to the bench's store), paid once per active
 * identity per flush, never per rendezvous.
 */
async function meterMicro(service: Service, n: number): Promise<{ perRendezvous: number; perWrite: number }> {
  const sink = { addUsage: async () => {} };
  const meter = new Meter({ store: sink, relayId: 'bench', log: silentLog, flushMs: 3_600_000 });
  let carried = 0;
  const handle = { bytes: () => ({ fromA: carried, fromB: carried }) };
  const start = (uuid: string): RendezvousStart => ({
    rid: 'r',
    protocol: 'generic',
    uuid,
    hops: 0,
    hiddenRelayId: 'bench',
    mobileRelayId: 'bench',
    source: '127.0.0.1',
    toHiddenBefore: 10,
    startedAt: Date.now(),
  });
  const t0 = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const end = meter.begin(start(`bench-${i % 1000}`), handle);
    carried += 100;
    if (i % 10_000 === 9_999) await meter.flush();
    end?.();
  }
  await meter.close();
  const used = process.cpuUsage(t0);
  const writes = 200;
  const delta = emptyTotals();
  delta.generic.bytesToHidden = 1;
  const w0 = process.cpuUsage();
  for (let i = 0; i < writes; i++) await service.store.addUsage(`bench-meter-write-${i % 20}`, delta);
  const w = process.cpuUsage(w0);
  return { perRendezvous: (used.user + used.system) / n, perWrite: (w.user + w.system) / writes };
}

/** The metering group. */
export async function benchMetering(ctx: GroupContext, service: Service): Promise<void> {
  const micro = { rendezvous: [] as number[], write: [] as number[] };
  await meterMicro(service, 20_000);
  for (let r = 0; r < ctx.runs; r++) {
    const m = await meterMicro(service, 200_000);
    micro.rendezvous.push(m.perRendezvous);
    micro.write.push(m.perWrite);
  }
  ctx.add("metering: the meter's own CPU per rendezvous (in-process)", micro.rendezvous, 'µs');
  ctx.add(
    'metering: CPU of one usage write (SDK side; once per active identity per flush)',
    micro.write,
    'µs',
  );
  const on = await startRelayProcess(service, { env: { RELAY_METER_FLUSH_MS: FLUSH_MS } });
  const off = await startRelayProcess(service, { env: { RELAY_METERING: 'off' } });
  const relays = [
    { label: 'metering on', relay: on },
    { label: 'metering off', relay: off },
  ];
  const pairings = ctx.quick ? 600 : 2_000;
  const contenders: Contender[] = [];
  for (const { label, relay } of relays) {
    const cookies = await registerN(service, SLOTS, label.replace(' ', '-'));
    contenders.push({
      label,
      park: relay,
      pair: relay,
      lines: (i: number) => ({ r: `R${cookies[i]}`, i: `I${mobileCookieFor(cookies[i] as string)}` }),
    });
  }
  const spliceCookies = await registerN(service, 2, 'splice');
  const bytes = (ctx.quick ? 512 : 1024) * 1024 * 1024;
  // Warm-up: JIT compilation is no metering cost.
  for (const c of contenders) await runPairings(c, pairings, SLOTS);
  const cpu: Record<string, number[]> = { 'metering on': [], 'metering off': [] };
  const gib: Record<string, number[]> = { 'metering on': [], 'metering off': [] };
  const load: number[] = [];
  // Both relays measured at once, each on its own pid, run after run: whatever else loads the
  // machine (other suites, other helpers) weighs on both alike, so the ratios hold where the
  // absolute figures drift.
  for (let r = 0; r < ctx.runs * 2 && ctx.timeLeft(); r++) {
    load.push(loadavg1());
    const paired = await Promise.all(contenders.map((c) => runPairings(c, pairings, SLOTS)));
    for (const [k, x] of paired.entries()) cpu[contenders[k]?.label as string]?.push(x.cpuUsPerPairing);
    const spliced = await Promise.all(
      relays.map(({ relay }, k) => spliceRun(relay, spliceCookies[k] as string, bytes)),
    );
    for (const [k, s] of spliced.entries()) gib[relays[k]?.label as string]?.push((s * 1024 ** 3) / bytes);
  }
  for (const { label } of relays) {
    ctx.add(`metering: ${label}, relay CPU per pairing (50 in flight)`, cpu[label] ?? [], 'µs');
    ctx.add(`metering: ${label}, relay CPU per GiB spliced`, gib[label] ?? [], 's');
  }
  const ratio = (a: number[] = [], b: number[] = []) => a.map((x, i) => x / (b[i] as number));
  ctx.add('metering: on / off, CPU per pairing', ratio(cpu['metering on'], cpu['metering off']), '×');
  ctx.add('metering: on / off, CPU per GiB', ratio(gib['metering on'], gib['metering off']), '×');
  ctx.add('metering: machine load (1-min load average) during the runs', load, '');
  for (const r of [on, off]) r.child.kill('SIGTERM');

  // Store requests at rest: idle parked hidden servers, metering on (flush every second) and off.
  const idle = await registerN(service, ctx.quick ? 40 : 200, 'idle');
  const windowMs = ctx.quick ? 10_000 : 30_000;
  const atRest = { on: [] as number[], off: [] as number[] };
  const updates = { on: [] as number[], off: [] as number[] };
  for (let r = 0; r < (ctx.quick ? 1 : 2) && ctx.timeLeft(); r++) {
    const withMeter = await atRestRun(service, { RELAY_METER_FLUSH_MS: FLUSH_MS }, idle, windowMs);
    const without = await atRestRun(service, { RELAY_METERING: 'off' }, idle, windowMs);
    atRest.on.push((withMeter.total * 60_000) / windowMs);
    atRest.off.push((without.total * 60_000) / windowMs);
    updates.on.push(withMeter.updates);
    updates.off.push(without.updates);
  }
  ctx.add(
    `metering: store requests at rest per minute, ${idle.length} idle parked, metering on`,
    atRest.on,
    'req',
  );
  ctx.add(
    `metering: store requests at rest per minute, ${idle.length} idle parked, metering off`,
    atRest.off,
    'req',
  );
  ctx.add('metering: UpdateItem requests at rest in the window, metering on', updates.on, 'req');
  ctx.add('metering: UpdateItem requests at rest in the window, metering off', updates.off, 'req');
}
