/**
 * The pairing group of `npm run bench` (`--only pairing`): relay CPU per pairing and connect-to-`+OK`
 * latency percentiles with 1 and 50 pairings in flight, on one relay (local), across two relays
 * (cross-relay, over the peer line), and on a minimal Node relay as the floor, interleaved run by
 * run after one warm-up pass per contender.
 */
import { mobileCookieFor } from '../server/cookies.js';
import {
  cpuSeconds,
  dial,
  type GroupContext,
  percentile,
  RELAY_NODE_FLAGS,
  spawnReady,
  track,
} from './harness.js';
import { park, type RelayProcess, registerCookie, type Service } from './service.js';

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

/** `pairings` hidden sockets parked at `parkAt`, then paired from `mobileAt`, `inFlight` at a time. */
async function runPairings(
  service: Service,
  pairings: number,
  parkAt: { pid: number; port: number; minimal?: boolean },
  mobileAt: { pid: number; port: number },
  inFlight: number,
) {
  const cookie = await registerCookie(
    service,
    `bench-pair-${inFlight}-${parkAt.port}-${mobileAt.port}-${Date.now()}`,
  );
  // The minimal relay checks nothing: it keys its parks by the line as sent.
  const parkCookie = parkAt.minimal ? mobileCookieFor(cookie) : cookie;
  const hiddens = await Promise.all(Array.from({ length: pairings }, () => park(parkAt.port, parkCookie)));
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
    while (next < pairings) {
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
    cpuUsPerPairing: (cpu * 1e6) / pairings,
    p50: percentile(latencies, 50),
    p90: percentile(latencies, 90),
    p99: percentile(latencies, 99),
    p999: percentile(latencies, 99.9),
  };
}

/** The pairing group: local, cross-relay (`relayA` → `relayB`) and the minimal relay, 1 and 50 in flight. */
export async function benchPairing(
  ctx: GroupContext,
  service: Service,
  relayA: RelayProcess,
  relayB: RelayProcess,
): Promise<void> {
  const pairings = ctx.quick ? 600 : 2_000;
  const minimal = await startMinimalRelay();
  const contenders = [
    ['local', relayA, relayA],
    ['cross-relay', relayA, relayB],
    ['minimal Node relay', minimal, minimal],
  ] as const;
  // One warm-up pass per contender first: the first pairings of a fresh process run in V8's
  // interpreter and would count JIT compilation as pairing cost.
  for (const [, parkAt, mobileAt] of contenders) await runPairings(service, pairings, parkAt, mobileAt, 50);
  for (const inFlight of [1, 50]) {
    const results = new Map<string, Record<'cpu' | 'p50' | 'p90' | 'p99' | 'p999', number[]>>();
    for (let r = 0; r < ctx.runs && ctx.timeLeft(); r++) {
      // Interleaved, like the throughput runs, so drift in the machine's load hits all alike.
      for (const [label, parkAt, mobileAt] of contenders) {
        const x = await runPairings(service, pairings, parkAt, mobileAt, inFlight);
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
      ctx.add(`pairing ${label}, ${inFlight} in flight: relay CPU per pairing`, v.cpu, 'µs');
      ctx.add(`pairing ${label}, ${inFlight} in flight: connect to +OK p50`, v.p50, 'ms');
      ctx.add(`pairing ${label}, ${inFlight} in flight: connect to +OK p90`, v.p90, 'ms');
      ctx.add(`pairing ${label}, ${inFlight} in flight: connect to +OK p99`, v.p99, 'ms');
      ctx.add(`pairing ${label}, ${inFlight} in flight: connect to +OK p99.9`, v.p999, 'ms');
    }
  }
}
