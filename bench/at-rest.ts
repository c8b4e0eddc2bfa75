/**
 * The parked-socket groups of `npm run bench` (`--only memory`, `--only store`): RSS per parked
 * socket for each way the relay is started (a fresh relay process per run, one socket per hidden
 * server) and store requests per parked hidden server per minute at rest. They share one set of
 * hidden servers registered up front; the measuring itself (relays, parkers, checks) is in
 * bench/parked.ts.
 */
import { join } from 'node:path';
import { type GroupContext, RELAY_MALLOC_ENV, RELAY_NODE_FLAGS, ROOT } from './harness.js';
import {
  hardFdLimit,
  largestParkable,
  parkedMemoryRun,
  type RelayVariant,
  registerMany,
  storeAtRestRun,
} from './parked.js';
import { PARKED, type Service, TABLE } from './service.js';

/** Parked sockets per hidden server in the memory runs. */
const SOCKETS_PER_SERVER = 10;
/** Hidden servers of the 500-socket warm-up. */
const WARM_SERVERS = 50;

/**
 * Runs one memory figure `runs` times (at least once even past the deadline: a memory figure is
 * the point of this group) and records the per-socket and second-half figures.
 */
async function memoryFigures(
  { add, timeLeft }: GroupContext,
  name: string,
  n: number,
  runs: number,
  run: () => Promise<{ perSocket: number; marginal: number }>,
): Promise<void> {
  const per: number[] = [];
  const marginal: number[] = [];
  for (let r = 0; r < runs && (r === 0 || timeLeft()); r++) {
    const x = await run();
    per.push(x.perSocket);
    marginal.push(x.marginal);
  }
  const label = `${name}: RSS per parked socket, ${n.toLocaleString('en')} parked after a 500-socket warm-up`;
  add(label, per, 'bytes');
  add(`${label}, second half only`, marginal, 'bytes');
}

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

/**
 * The memory runs' relay as the container runs it: the Dockerfile's allocator settings (MALLOC_*)
 * and in a cluster (peer port open, park records naming it), as every deployed relay is.
 */
function memoryEnv(endpoint: string): NodeJS.ProcessEnv {
  return {
    ...relayEnv(endpoint),
    ...RELAY_MALLOC_ENV,
    RELAY_CLUSTER_SECRET: 'bench-memory-cluster-secret-0123456789',
    RELAY_PEER_PORT: '0',
    RELAY_PEER_HOST: '127.0.0.1',
  };
}

function relayEnv(endpoint: string): NodeJS.ProcessEnv {
  return {
    AWS_ENDPOINT_URL_DYNAMODB: endpoint,
    AWS_REGION: 'local',
    RENDEZVOUS_TABLE: TABLE,
    RELAY_MAX_PARKED: '64',
  };
}

/** The memory group and/or the store-at-rest group (`which`), over one registration of hidden servers. */
export async function benchAtRest(
  ctx: GroupContext,
  service: Service,
  which: { memory: boolean; store: boolean },
): Promise<void> {
  const { quick, add, timeLeft } = ctx;
  const hard = hardFdLimit();
  // The large count: 200,000 is what a task is sized for; here as many as the descriptor hard
  // limit lets one relay hold (the bench raises each child's soft limit to it).
  const large = Math.min(200_000, largestParkable(hard));
  const sizes = quick ? [PARKED] : [PARKED, large];
  // Ten sockets per hidden server (a pool of 10, as agents keep): the store, an in-process
  // dynalite here, checks a few hundred cookies a second, and one key per socket would make each
  // run minutes long; one key per socket is measured once at the smallest size in a full run.
  const perKeyServers = quick ? 0 : PARKED;
  const t0 = Date.now();
  // The store group alone needs only its 1,000.
  const servers = await registerMany(
    service.store,
    which.memory
      ? Math.max(Math.max(...sizes) / SOCKETS_PER_SERVER + WARM_SERVERS, perKeyServers + WARM_SERVERS)
      : 1_000,
    `mem-${Date.now()}`,
  );
  console.error(`bench: ${servers.length} hidden servers registered in ${Date.now() - t0} ms`);
  // The warm-up's 500 sockets belong to hidden servers of their own, not parked again after it.
  const warm = servers.slice(0, WARM_SERVERS).flatMap((c) => Array<string>(SOCKETS_PER_SERVER).fill(c));
  const measured = servers.slice(WARM_SERVERS);
  if (which.memory && large < 50_000)
    console.error(
      `bench: descriptor hard limit ${hard}: one relay holds at most ${large.toLocaleString('en')} parked here (50,000 needs a hard limit of about 63,000)`,
    );
  const env = memoryEnv(service.storeEndpoint);
  for (const variant of which.memory ? relayVariants() : []) {
    // The largest count for the bundle as deployed; the others at 10,000.
    for (const n of variant.name === 'bundle' ? sizes : [PARKED]) {
      const sockets = measured
        .slice(0, n / SOCKETS_PER_SERVER)
        .flatMap((c) => Array<string>(SOCKETS_PER_SERVER).fill(c));
      // The bundle as deployed gets the most runs; the others fewer (quick: one).
      const runs = variant.name === 'bundle' ? (quick ? 2 : 3) : quick ? 1 : 2;
      await memoryFigures(ctx, `memory (${variant.name})`, n, runs, () =>
        parkedMemoryRun(variant, env, sockets, warm),
      );
    }
  }
  // Only with time left: 10,000 keys' first parks cost the store 20,000 requests.
  if (which.memory && perKeyServers > 0 && ctx.timeLeft()) {
    const bundle = relayVariants()[0] as RelayVariant;
    const sockets = servers.slice(servers.length - perKeyServers);
    await memoryFigures(ctx, 'memory (bundle, one socket per hidden server)', perKeyServers, 1, () =>
      parkedMemoryRun(bundle, env, sockets, warm),
    );
  }
  // Store requests at rest, counted at the store: 1,000 hidden servers (quick: 300) on 2 relays
  // of one cluster, at the relays' real settings (10 s rounds, 20 s heartbeats, daily record
  // rewrites), over windows of 2 minutes (quick: 45 s), 3 runs (quick: 2).
  const keys = Math.min(servers.length, quick ? 300 : 1_000);
  const relays = 2;
  const regions = 3;
  const runs: Array<Awaited<ReturnType<typeof storeAtRestRun>>> = [];
  for (let r = 0; r < (quick ? 2 : 3) && (r === 0 || timeLeft()) && which.store; r++) {
    runs.push(
      await storeAtRestRun(
        relayVariants()[0] as RelayVariant,
        relayEnv(service.storeEndpoint),
        service.storeEndpoint,
        servers.slice(0, keys),
        quick ? 45_000 : 120_000,
        { relays, regions },
      ),
    );
  }
  if (runs.length) {
    const label = `${keys} parked on ${relays} relays`;
    // One region (the default deployment: cdk.json `regions` is one region), each write once.
    add(
      `store requests at rest per parked hidden server per minute (${label}, one region)`,
      runs.map((x) => x.perKeyPerMinute),
      'req',
    );
    // A global table of three regions: each write is replicated to the two others (counted ×3).
    add(
      `store requests at rest per parked hidden server per minute (${label}, ${regions} regions: writes ×${regions})`,
      runs.map((x) => x.perKeyPerMinuteReplicated),
      'req',
    );
    add(
      'store requests at rest per relay per minute (one region)',
      runs.map((x) => x.perRelayPerMinute),
      'req',
    );
    console.error(
      `bench: store requests at rest, by operation, per run: ${runs.map((x) => JSON.stringify(x.byOp)).join(' ')}`,
    );
  }
}
