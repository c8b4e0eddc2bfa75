/**
 * The pairing group of `npm run bench` (`--only pairing`): relay CPU per pairing and connect-to-`+OK`
 * latency percentiles with 1 and 50 pairings in flight, the park inside the timed window.
 *
 * Each of `inFlight` slots is one hidden server: it parks, a mobile client pairs with it, and its
 * hidden side parks again as soon as it is told `+OK` (what an agent does), so every pairing in
 * the window pays for both halves: the park (accept, line, bookkeeping) and the pairing. The relays
 * log as deployed: their records go to stdout, a pipe this process drains (what a container's log
 * driver does), never /dev/null.
 *
 * Contenders, interleaved run by run after one warm-up pass each: our relay started as
 * `rendezvous relay` and as the production bundle (dist/relay.mjs); the original node-rendezvous's
 * generic relay (bench/original: its own code and its winston logging, copied to a temporary
 * folder and run there); a minimal Node relay (the floor); and ours across two relays (the hidden
 * server on one, the mobile client on the other, over the peer line).
 */
import { cpSync, mkdtempSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mobileCookieFor } from '../server/cookies.js';
import {
  cpuSeconds,
  dial,
  freePort,
  type GroupContext,
  percentile,
  RELAY_NODE_FLAGS,
  ROOT,
  spawnReady,
  track,
} from './harness.js';
import { type RelayProcess, registerCookie, type Service, startRelayProcess } from './service.js';

/**
 * A minimal Node relay for the same generic protocol (`R<c>` parks, `I<c>` pairs, `+OK` to both,
 * `pipe` both ways; no cookie check, no limits, no cluster, no records; a parked socket that hangs
 * up is dropped): the floor a Node relay cannot go below.
 */
const MINIMAL_RELAY = `const net=require('net');const parked=new Map();
net.createServer({allowHalfOpen:true},(s)=>{s.setNoDelay(true);s.on('error',()=>s.destroy());let buf='';
const onData=(d)=>{buf+=d.toString('latin1');const nl=buf.indexOf('\\n');if(nl<0)return;s.off('data',onData);
const key=buf.slice(1,nl);if(buf[0]==='R'){const l=parked.get(key)||[];l.push(s);parked.set(key,l);
s.once('end',()=>s.destroy());s.once('close',()=>{const i=l.indexOf(s);if(i>=0)l.splice(i,1);});return;}
const h=(parked.get(key)||[]).shift();if(!h)return s.end('-ERR none\\n');h.removeAllListeners('end');
h.write('+OK\\n');s.write('+OK\\n');h.pipe(s);s.pipe(h);h.on('error',()=>s.destroy());};
s.on('data',onData);}).listen(0,'127.0.0.1',function(){console.log('port '+this.address().port)});`;

/** Where a contender parks and pairs, and the lines a slot sends (`R…`, `I…`). */
export interface Contender {
  label: string;
  park: { pid: number; port: number };
  pair: { pid: number; port: number };
  /** The park and pair lines of slot `i` (without the newline). */
  lines: (i: number) => { r: string; i: string };
}

/** The most slots a run uses (the 50-in-flight runs). */
const SLOTS = 50;

async function startMinimalRelay(): Promise<{ pid: number; port: number }> {
  const r = track(
    await spawnReady(process.execPath, [...RELAY_NODE_FLAGS, '-e', MINIMAL_RELAY], {}, /port \d+/),
  );
  return { pid: r.child.pid as number, port: Number(/port (\d+)/.exec(r.out())?.[1]) };
}

/**
 * The original's generic relay (bench/original/archive0/rendezvous-server.js with its winston),
 * in a fresh temporary folder: its records go to stdout (a pipe) and to server.log there. Its
 * registration server is not run: the slots' cookies are registered at start (BENCH_COOKIES).
 */
async function startOriginalRelay(cookies: string[]): Promise<{ pid: number; port: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'rendezvous-bench-original-'));
  cpSync(join(ROOT, 'bench/original/archive0'), join(dir, 'archive0'), { recursive: true });
  cpSync(join(ROOT, 'bench/original/vendor'), join(dir, 'node_modules'), { recursive: true });
  cpSync(join(ROOT, 'bench/original/run.js'), join(dir, 'run.js'));
  const port = await freePort();
  const r = track(
    await spawnReady(
      process.execPath,
      ['run.js'],
      { PORT: String(port), BENCH_COOKIES: cookies.join(',') },
      /rendezvous listening/,
      dir,
    ),
  );
  return { pid: r.child.pid as number, port };
}

/** The first chunk a socket receives ('' if it closes first). */
function firstChunk(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    const onData = (d: Buffer) => {
      s.off('close', onClose);
      resolve(d.toString('latin1'));
    };
    const onClose = () => {
      s.off('data', onData);
      resolve('');
    };
    s.once('data', onData);
    s.once('close', onClose);
  });
}

/** A hidden server's socket, parked: dialled, its line written (the relay does not answer a park). */
async function parkSlot(port: number, line: string): Promise<{ socket: Socket; ok: Promise<string> }> {
  const socket = await dial(port);
  socket.on('error', () => {});
  const ok = firstChunk(socket);
  await new Promise((r) => socket.write(`${line}\n`, r));
  return { socket, ok };
}

/**
 * `pairings` pairings over `slots` slots. A slot's first park is before the window; from then on
 * each pairing's re-park is inside it. Returns the CPU of the contender's relays per pairing, the
 * mobile's connect-to-`+OK` percentiles, and how many mobile dials found the slot not yet parked
 * (the relay had not read the re-park's line yet; the original answers `-ERR not ready` at once and
 * the slot dials again, ours holds the client until it parks).
 */
export async function runPairings(c: Contender, pairings: number, slots: number) {
  if (process.env.BENCH_DEBUG) console.error(`pairing: ${c.label}, ${pairings} over ${slots} slots`);
  const parked = await Promise.all(
    Array.from({ length: slots }, (_, i) => parkSlot(c.park.port, c.lines(i).r)),
  );
  await new Promise((r) => setTimeout(r, 300));
  const pids = [...new Set([c.park.pid, c.pair.pid])];
  const stages: string[] = Array.from({ length: slots }, () => 'start');
  const watch = process.env.BENCH_DEBUG
    ? setInterval(
        () => console.error(`pairing: ${c.label} next=${next} stages=${[...new Set(stages)]}`),
        5_000,
      )
    : undefined;
  const cpu0 = pids.map(cpuSeconds);
  const latencies: number[] = [];
  let notReady = 0;
  let failed = 0;
  let next = 0;
  const slot = async (i: number) => {
    const { r, i: pairLine } = c.lines(i);
    while (next < pairings) {
      next++;
      let m: Socket | undefined;
      let t0 = 0n;
      for (let tries = 0; tries < 100; tries++) {
        t0 = process.hrtime.bigint();
        stages[i] = 'dial';
        const s = await dial(c.pair.port);
        s.on('error', () => {});
        const got = firstChunk(s);
        s.write(`${pairLine}\n`);
        stages[i] = 'answer';
        const answer = await got;
        if (answer.startsWith('+OK')) {
          m = s;
          break;
        }
        s.destroy();
        if (/not ready|-ERR none/.test(answer)) {
          // The original (and the minimal relay) answer at once when the re-park's line is not
          // read yet: dial again.
          notReady++;
          await new Promise((res) => setImmediate(res));
          continue;
        }
        // Ours held the client for its pair wait (5 s) and found none: a pairing lost.
        if (/no hidden server/.test(answer)) break;
        throw new Error(`${c.label}: ${answer || 'closed'}`);
      }
      const old = parked[i] as Awaited<ReturnType<typeof parkSlot>>;
      if (!m) {
        // The slot parks afresh and goes on: a lost pairing is counted, not waited for again.
        failed++;
        old.socket.destroy();
        parked[i] = await parkSlot(c.park.port, r);
        continue;
      }
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      // The agent's move: told +OK, it parks again at once.
      stages[i] = 'hidden +OK';
      await old.ok;
      stages[i] = 're-park';
      parked[i] = await parkSlot(c.park.port, r);
      const mobile = m;
      mobile.end();
      old.socket.end();
      stages[i] = 'close';
      await new Promise((res) => (mobile.destroyed ? res(null) : mobile.once('close', res)));
      stages[i] = 'done';
    }
  };
  await Promise.all(Array.from({ length: slots }, (_, i) => slot(i))).finally(() => clearInterval(watch));
  await new Promise((r) => setTimeout(r, 200));
  const cpu = pids.map(cpuSeconds).reduce((a, b, i) => a + b - (cpu0[i] as number), 0);
  for (const p of parked) p.socket.destroy();
  return {
    cpuUsPerPairing: (cpu * 1e6) / pairings,
    p50: percentile(latencies, 50),
    p90: percentile(latencies, 90),
    p99: percentile(latencies, 99),
    p999: percentile(latencies, 99.9),
    notReadyPerPairing: notReady / pairings,
    failedPerPairing: failed / pairings,
  };
}

/** The pairing group: the contenders above, 1 and 50 in flight. */
export async function benchPairing(
  ctx: GroupContext,
  service: Service,
  relayA: RelayProcess,
  relayB: RelayProcess,
): Promise<void> {
  const pairings = ctx.quick ? 600 : 2_000;
  // One registered hidden server per slot and contender: a relay of the cluster that held a
  // cookie's park in an earlier run must not be where another contender's mobile looks for it.
  // Four at a time: the API's per-source guess limits would refuse a burst of 50 from one address.
  let registered = 0;
  const register = async (n: number) => {
    const out: string[] = [];
    for (let i = 0; i < n; i += 4)
      out.push(
        ...(await Promise.all(
          Array.from({ length: Math.min(4, n - i) }, () =>
            registerCookie(service, `bench-pair-${registered++}-${Date.now()}`),
          ),
        )),
      );
    return out;
  };
  const ours = (cookies: string[]) => (i: number) => ({
    r: `R${cookies[i]}`,
    i: `I${mobileCookieFor(cookies[i] as string)}`,
  });
  const cookies = await register(SLOTS);
  const cli = await startRelayProcess(service, { cli: true });
  // BENCH_PAIRING_BASELINE: another build of our relay (e.g. main's dist/relay.mjs), run beside it
  // as a contender: a before/after in one run.
  const baselineBundle = process.env.BENCH_PAIRING_BASELINE;
  const baseline = baselineBundle ? await startRelayProcess(service, { bundle: baselineBundle }) : undefined;
  const minimal = await startMinimalRelay();
  // The original keys both lines by the text after R/I, as its registration server's cookies were.
  const originalCookies = cookies.map((c) => mobileCookieFor(c));
  const original = await startOriginalRelay(originalCookies);
  const contenders: Contender[] = [
    { label: 'ours (rendezvous relay)', park: cli, pair: cli, lines: ours(await register(SLOTS)) },
    { label: 'ours (dist/relay.mjs)', park: relayA, pair: relayA, lines: ours(await register(SLOTS)) },
    {
      label: 'original relay',
      park: original,
      pair: original,
      lines: (i) => ({ r: `R${originalCookies[i]}`, i: `I${originalCookies[i]}` }),
    },
    {
      label: 'minimal Node relay',
      park: minimal,
      pair: minimal,
      lines: (i) => ({ r: `R${originalCookies[i]}`, i: `I${originalCookies[i]}` }),
    },
    { label: 'cross-relay', park: relayA, pair: relayB, lines: ours(cookies) },
  ];
  if (baseline)
    contenders.splice(2, 0, {
      label: 'ours, baseline build',
      park: baseline,
      pair: baseline,
      lines: ours(await register(SLOTS)),
    });
  // BENCH_PAIRING_CONTENDERS: a regular expression over the labels, to run only some (e.g. with
  // BENCH_RELAY_FLAGS="--cpu-prof …" to profile one relay under this load).
  const only = process.env.BENCH_PAIRING_CONTENDERS;
  if (only)
    contenders.splice(0, contenders.length, ...contenders.filter((c) => new RegExp(only).test(c.label)));
  // One warm-up pass per contender first: the first pairings of a fresh process run in V8's
  // interpreter and would count JIT compilation as pairing cost.
  for (const c of contenders) await runPairings(c, pairings, SLOTS);
  type Series = Record<'cpu' | 'p50' | 'p90' | 'p99' | 'p999' | 'notReady' | 'failed', number[]>;
  for (const inFlight of [1, 50]) {
    const results = new Map<string, Series>();
    for (let r = 0; r < ctx.runs && ctx.timeLeft(); r++) {
      // Interleaved, like the throughput runs, so drift in the machine's load hits all alike.
      for (const c of contenders) {
        const x = await runPairings(c, inFlight === 1 ? pairings / 2 : pairings, inFlight);
        const slot = results.get(c.label) ?? {
          cpu: [],
          p50: [],
          p90: [],
          p99: [],
          p999: [],
          notReady: [],
          failed: [],
        };
        slot.cpu.push(x.cpuUsPerPairing);
        slot.p50.push(x.p50);
        slot.p90.push(x.p90);
        slot.p99.push(x.p99);
        slot.p999.push(x.p999);
        slot.notReady.push(x.notReadyPerPairing);
        slot.failed.push(x.failedPerPairing);
        results.set(c.label, slot);
      }
    }
    for (const [label, v] of results) {
      const name = `pairing ${label}, ${inFlight} in flight`;
      ctx.add(`${name}: relay CPU per pairing`, v.cpu, 'µs');
      ctx.add(`${name}: connect to +OK p50`, v.p50, 'ms');
      ctx.add(`${name}: connect to +OK p90`, v.p90, 'ms');
      ctx.add(`${name}: connect to +OK p99`, v.p99, 'ms');
      ctx.add(`${name}: connect to +OK p99.9`, v.p999, 'ms');
      ctx.add(`${name}: mobile dials before the re-park was read, per pairing`, v.notReady, '');
      ctx.add(`${name}: pairings lost (no hidden server after the pair wait), per pairing`, v.failed, '');
    }
    // Ours against the original, run by run (each run's contenders ran back to back).
    const o = results.get('original relay');
    for (const label of ['ours (rendezvous relay)', 'ours (dist/relay.mjs)', 'ours, baseline build']) {
      const v = results.get(label);
      if (!o || !v) continue;
      const ratio = (a: number[], b: number[]) => a.map((x, i) => x / (b[i] as number));
      ctx.add(
        `pairing ${inFlight} in flight: ${label} / original, CPU per pairing`,
        ratio(v.cpu, o.cpu),
        '×',
      );
      ctx.add(`pairing ${inFlight} in flight: ${label} / original, p99`, ratio(v.p99, o.p99), '×');
    }
  }
  // The relays this group started stop cleanly (a --cpu-prof profile is written at exit).
  await Promise.all(
    [cli, baseline].map(
      (r) =>
        r &&
        new Promise((res) => {
          const t = setTimeout(res, 10_000);
          r.child.once('exit', () => {
            clearTimeout(t);
            res(null);
          });
          r.child.kill('SIGTERM');
        }),
    ),
  );
}
