/**
 * The cluster group of `npm run bench` (`--only cluster`): three relay processes (the production
 * bundle) behind a tiny round-robin TCP front standing in for the NLB, each advertising a direct
 * address (RELAY_DIRECT_HOST). Hidden servers park through the front, two sockets each (POOL), and park
 * again after every rendezvous, as agents do; mobile clients look the uuid up over HTTP and then
 * connect. Contenders, interleaved run by run:
 *
 *   direct, sticky  hidden servers as our agent parks: through the front, asking `direct`, then
 *              at the address the first `+OK` named (their pool converges on one relay); the
 *              look-up names the holder, the mobile connects there
 *   direct     the look-up names the holding relay (RENDEZVOUS_LOOKUP_DIRECT on): the mobile
 *              connects there (the front when the answer names none); hidden servers park
 *              through the front every time (the original's agent)
 *   front      today's answer: the mobile connects through the front (any relay)
 *   front, pool 6  the same with six sockets per hidden server (two per relay): what an
 *              HTTP-specific client (any HTTP client, no look-up, through the NLB) sees when its
 *              hidden server's pool is at least twice the relay count
 *   one relay  everything on one relay, no front: the local baseline
 *
 * Reported per contender: the share of pairings that were local (the mobile reached the relay
 * whose hidden socket it was paired with, known from the front's routing), relay CPU per pairing
 * (all relays), connect→`+OK` p50/p99, and the look-up's p50.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { splice } from '../core/splice.js';
import { currentCode } from '../core/totp.js';
import { makeLookupHandler } from '../functions/lookup.js';
import { startApiAdapter } from '../local/api-adapter.js';
import { provisionIdentity } from '../server/identities.js';
import { cpuSeconds, dial, type GroupContext, percentile } from './harness.js';
import { type Service, startRelayProcess } from './service.js';

const RELAYS = 3;
const HIDDEN = 20;
/** Sockets each hidden server keeps parked (the `front, pool 6` contender: 6). */
const POOL = 2;
const IN_FLIGHT = 10;

interface ClusterRelay {
  pid: number;
  port: number;
}

/** A relay of the cluster: the production bundle, advertising 127.0.0.1:<port> as its direct address. */
function startClusterRelay(service: Service): Promise<ClusterRelay> {
  return startRelayProcess(service, { env: { RELAY_DIRECT_HOST: '127.0.0.1' } });
}

/**
 * A round-robin TCP front (the NLB's stand-in): each connection goes to the next relay. It
 * remembers which relay each client port was sent to, so the bench knows where a socket landed.
 */
async function startFront(targets: number[]) {
  let next = 0;
  const routed = new Map<number, number>();
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    const target = targets[next++ % targets.length] as number;
    routed.set(client.remotePort as number, target);
    client.on('error', () => client.destroy());
    dial(target).then(
      (up) => splice(client, up),
      () => client.destroy(),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    /** The relay a socket dialled through the front reached. */
    relayOf: (s: Socket) => routed.get(s.localPort as number),
    close: () => server.close(),
  };
}

type Front = Awaited<ReturnType<typeof startFront>>;

/**
 * Keeps POOL hidden sockets parked per cookie at `parkAt` (a relay, or the front). A paired socket
 * tells the mobile which relay it was parked on (`<port>\n`), ends, and is replaced at once.
 * `sticky`: as our agent does (client/park-generic.ts), each park asks for the relay's direct
 * address (`R<c> direct`); once a `+OK` names one, the cookie's parks go there, and its sockets
 * parked elsewhere (not being paired) move there.
 */
function keepParked(cookies: string[], parkAt: number, pool: number, front?: Front, sticky = false) {
  let stopped = false;
  const open = new Set<Socket>();
  /** Per cookie: the direct port learned, and its open parks with the relay each sits on (if known). */
  const direct = new Map<string, number>();
  const parksOf = new Map<string, Map<Socket, number | undefined>>();
  const parkOne = async (c: string): Promise<void> => {
    if (stopped) return;
    const at = direct.get(c);
    const s = await dial(at ?? parkAt);
    open.add(s);
    const mine = parksOf.get(c) ?? new Map<Socket, number | undefined>();
    parksOf.set(c, mine);
    mine.set(s, at ?? (front ? undefined : parkAt));
    s.on('error', () => s.destroy());
    s.on('close', () => {
      open.delete(s);
      mine.delete(s);
    });
    s.write(sticky ? `R${c} direct\n` : `R${c}\n`);
    s.once('data', (d: Buffer) => {
      mine.delete(s);
      // Asked only now: the front has routed the socket once bytes came back through it.
      const on = at ?? (front ? front.relayOf(s) : parkAt);
      s.end(`${on}\n`);
      const named = sticky ? Number(/^\+OK[^\n]* direct=[^\s]*:(\d+)/.exec(d.toString('latin1'))?.[1]) : NaN;
      if (named && direct.get(c) !== named) {
        direct.set(c, named);
        for (const [other, where] of mine) {
          if ((where ?? front?.relayOf(other)) === named || other.readableLength > 0) continue;
          mine.delete(other);
          other.destroy();
          void parkOne(c).catch(() => undefined);
        }
      }
      void parkOne(c).catch(() => undefined);
    });
  };
  const ready = Promise.all(cookies.flatMap((c) => Array.from({ length: pool }, () => parkOne(c))));
  return {
    ready,
    stop: () => {
      stopped = true;
      for (const s of open) s.destroy();
    },
  };
}

/** One mobile pairing: the relay it reached and the one its hidden socket was parked on. */
async function pairOnce(
  port: number,
  iCookie: string,
  reached: (s: Socket) => number | undefined,
): Promise<{ ms: number; local: boolean }> {
  const t0 = process.hrtime.bigint();
  const m = await dial(port);
  m.write(`${iCookie}\n`);
  let text = '';
  let ms = 0;
  await new Promise<void>((resolve, reject) => {
    m.on('data', (d) => {
      if (!ms) ms = Number(process.hrtime.bigint() - t0) / 1e6;
      text += d.toString();
    });
    m.once('end', resolve);
    m.once('error', reject);
  });
  m.end();
  const parkedOn = Number(/^\+OK[^\n]*\n(\d+)/.exec(text)?.[1]);
  return { ms, local: parkedOn === reached(m) };
}

/**
 * Provisions `uuid` and registers it through the API, its code sent again while the API answers
 * 429 or 503 (30 PUTs from one address meet its per-source limits): the `R` cookie's body.
 */
async function registered(service: Service, uuid: string): Promise<string> {
  const id = await provisionIdentity(service.store, { uuid });
  for (let i = 0; ; i++) {
    const res = await fetch(`${service.apiUrl}/?uuid=${uuid}&response=${currentCode(id)}`, { method: 'PUT' });
    const body = (await res.json()) as { result?: { cookie: string } };
    if (body.result) return body.result.cookie.slice(1);
    if ((res.status !== 429 && res.status !== 503) || i >= 30)
      throw new Error(`registering ${uuid}: HTTP ${res.status} ${JSON.stringify(body)}`);
    await new Promise((r) => setTimeout(r, 1_000 * Number(res.headers.get('retry-after') ?? 1)));
  }
}

type Contender = 'direct, sticky' | 'direct' | 'front' | 'front, pool 6' | 'one relay';

/** The cluster group: see the module comment. */
export async function benchCluster(ctx: GroupContext, service: Service): Promise<void> {
  const pairings = ctx.quick ? 300 : 1_500;
  // Each contender's hidden servers, registered once (runs reuse them, a few seconds apart).
  const hidden = new Map<Contender, { uuids: string[]; cookies: string[] }>();
  const relays: ClusterRelay[] = [];
  for (let i = 0; i < RELAYS; i++) relays.push(await startClusterRelay(service));
  const front = await startFront(relays.map((r) => r.port));
  const lookups = {
    direct: await startApiAdapter({
      register: async () => ({ statusCode: 405 }),
      lookup: makeLookupHandler(() => ({ store: service.store, direct: {} })),
      port: 0,
    }),
    plain: await startApiAdapter({
      register: async () => ({ statusCode: 405 }),
      lookup: makeLookupHandler(() => ({ store: service.store })),
      port: 0,
    }),
  };
  const byPort = new Map(relays.map((r) => [r.port, r]));

  const run = async (who: Contender, pairings: number) => {
    const pool = who === 'front, pool 6' ? 6 : POOL;
    let mine = hidden.get(who);
    if (!mine) {
      const stamp = `${who.replace(/\W+/g, '-')}-${Date.now()}`;
      const uuids = Array.from({ length: HIDDEN }, (_, i) => `bench-cluster-${stamp}-${i}`);
      // One at a time, again on a refusal: 20 PUTs at once from one address meet the API's limits.
      const cookies: string[] = [];
      for (const u of uuids) cookies.push(await registered(service, u));
      mine = { uuids, cookies };
      hidden.set(who, mine);
    }
    const { uuids, cookies } = mine;
    const base = relays[0] as ClusterRelay;
    const parks =
      who === 'one relay'
        ? keepParked(cookies, base.port, pool)
        : keepParked(cookies, front.port, pool, front, who === 'direct, sticky');
    await parks.ready;
    // Park records written, heartbeats in: what a look-up reads.
    await new Promise((r) => setTimeout(r, 1_000));
    const pids = who === 'one relay' ? [base.pid] : relays.map((r) => r.pid);
    const cpu0 = pids.map(cpuSeconds);
    const connectMs: number[] = [];
    const lookupMs: number[] = [];
    let local = 0;
    let next = 0;
    const worker = async () => {
      while (next < pairings) {
        const i = next++;
        const uuid = uuids[i % HIDDEN] as string;
        const t0 = process.hrtime.bigint();
        const named = who === 'direct' || who === 'direct, sticky';
        const api = named ? lookups.direct : lookups.plain;
        const res = await fetch(`${api.url}/?uuid=${uuid}`);
        const answer = (
          (await res.json()) as { result: { host: string; port: number; cookie: string; fallback?: unknown } }
        ).result;
        lookupMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
        let port: number;
        if (who === 'one relay') port = base.port;
        else if (named && answer.fallback && byPort.has(answer.port)) port = answer.port;
        else port = front.port;
        const reached = port === front.port ? (s: Socket) => front.relayOf(s) : () => port;
        const x = await pairOnce(port, answer.cookie, reached);
        connectMs.push(x.ms);
        if (x.local) local++;
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    await new Promise((r) => setTimeout(r, 200));
    const cpu = pids.map(cpuSeconds).reduce((a, b, i) => a + b - (cpu0[i] as number), 0);
    parks.stop();
    // The stopped parks' records go (2 s linger) before these hidden servers park again.
    await new Promise((r) => setTimeout(r, 2_500));
    return {
      localShare: (100 * local) / pairings,
      cpuUs: (cpu * 1e6) / pairings,
      p50: percentile(connectMs, 50),
      p99: percentile(connectMs, 99),
      lookupP50: percentile(lookupMs, 50),
    };
  };

  const contenders: Contender[] = ['direct, sticky', 'direct', 'front', 'front, pool 6', 'one relay'];
  // A warm-up pass each (JIT), then interleaved runs.
  for (const who of contenders) await run(who, 100);
  const results = new Map<Contender, Record<'share' | 'cpu' | 'p50' | 'p99' | 'lookup', number[]>>();
  for (let r = 0; r < ctx.runs && ctx.timeLeft(); r++)
    for (const who of contenders) {
      const x = await run(who, pairings);
      const slot = results.get(who) ?? { share: [], cpu: [], p50: [], p99: [], lookup: [] };
      slot.share.push(x.localShare);
      slot.cpu.push(x.cpuUs);
      slot.p50.push(x.p50);
      slot.p99.push(x.p99);
      slot.lookup.push(x.lookupP50);
      results.set(who, slot);
    }
  for (const [who, v] of results) {
    const name = `cluster ${who}, ${IN_FLIGHT} in flight`;
    ctx.add(`${name}: pairings local to the holder`, v.share, '%');
    ctx.add(`${name}: relay CPU per pairing (all relays)`, v.cpu, 'µs');
    ctx.add(`${name}: connect to +OK p50`, v.p50, 'ms');
    ctx.add(`${name}: connect to +OK p99`, v.p99, 'ms');
    ctx.add(`${name}: look-up p50`, v.lookup, 'ms');
  }
  front.close();
  await lookups.direct.close();
  await lookups.plain.close();
}
