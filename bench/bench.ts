/**
 * `npm run bench [-- --quick] [-- --only <group>]`: the relay and the registration path, measured
 * side by side with what people would use instead, in one run, on real sockets on 127.0.0.1.
 * Every process under test is a child; its CPU comes from /proc/<pid>/stat (user+sys), steadier on
 * a shared 2-core machine than wall-clock throughput. Bounded in count and time; stops by itself.
 * Prints a table and writes bench/results/latest.json.
 *
 * This file reads the flags, starts the service and runs the groups, one file each:
 * throughput.ts, pairing.ts, cluster.ts, at-rest.ts (memory and store, measured by parked.ts), metering.ts,
 * registration.ts, client-package.ts; harness.ts holds what they share, report.ts the output.
 */
import { benchAtRest } from './at-rest.js';
import { benchBandwidth } from './bandwidth.js';
import { benchClientPackage } from './client-package.js';
import { benchCluster } from './cluster.js';
import { type Figure, type GroupContext, killChildren, summary } from './harness.js';
import { benchMetering } from './metering.js';
import { benchPairing } from './pairing.js';
import { benchRegistration } from './registration.js';
import { type BenchResult, machine, printReport, ratiosOf, writeResults } from './report.js';
import { startRelayProcess, startService } from './service.js';
import { benchThroughput, startForwarders, startSink } from './throughput.js';

const QUICK = process.argv.includes('--quick');
/** `--only throughput|pairing|cluster|memory|store|metering|bandwidth|registration|client`: one group, for iterating on it. */
const ONLY = process.argv[process.argv.indexOf('--only') + 1];
const want = (group: string) => !process.argv.includes('--only') || ONLY === group;
const RUNS = QUICK ? 3 : 5;
const started = Date.now();
// A full run's memory group alone takes several minutes (fresh relays, 25,000 sockets parked per
// round of sizes): the deadline bounds a run that hangs, not a normal one.
// BENCH_MINUTES overrides it (a quick run's sizes with more time, on a loaded machine).
const DEADLINE =
  started +
  (process.env.BENCH_MINUTES ? Number(process.env.BENCH_MINUTES) * 60_000 : QUICK ? 360_000 : 1_800_000);

async function main() {
  const figures: Record<string, Figure> = {};
  const add = (name: string, values: number[], unit: string) => {
    // A group cut short by the deadline has no runs: say so rather than print NaN.
    if (values.length === 0) console.error(`bench: no run of "${name}" before the deadline`);
    else figures[name] = summary(values, unit);
  };
  const ctx: GroupContext = { quick: QUICK, runs: RUNS, timeLeft: () => Date.now() < DEADLINE, add };
  console.error(`bench: ${QUICK ? 'quick' : 'full'} run, ${RUNS} runs per figure`);
  const service = await startService();
  const relayA = await startRelayProcess(service);
  const relayB = await startRelayProcess(service);
  // The sink and the forwarders start whatever the group: the ratios are computed over their names.
  const sink = await startSink();
  const forwarders = await startForwarders(sink.port);
  if (process.env.BENCH_DEBUG)
    console.error(`pids relay=${relayA.pid} ${forwarders.map((f) => `${f.name}=${f.pid}`).join(' ')}`);

  // 1. throughput
  if (want('throughput')) await benchThroughput(ctx, service, relayA, sink, forwarders);
  // 2. pairing
  if (want('pairing')) await benchPairing(ctx, service, relayA, relayB);
  // 2b. a cluster of three relays behind a round-robin front: direct look-ups against the front
  if (want('cluster')) await benchCluster(ctx, service);
  // 3. memory and store at rest: a fresh relay process per run, one socket per hidden server
  if (want('memory') || want('store'))
    await benchAtRest(ctx, service, { memory: want('memory'), store: want('store') });
  // 3b. metering per identity: its CPU per pairing and per GiB against metering off, store requests at rest
  if (want('metering')) await benchMetering(ctx, service);
  // 3c. the per-identity bandwidth cap: relay CPU per GiB with no cap, a slack one and a binding one
  if (want('bandwidth')) await benchBandwidth(ctx, service);
  // 4. registration
  if (want('registration')) await benchRegistration(ctx, service);
  // 5. the client package (packed, installed into an empty folder)
  if (want('client'))
    for (const [name, f] of Object.entries(await benchClientPackage(RUNS))) add(name, f.values, f.unit);

  const result: BenchResult = {
    date: new Date().toISOString(),
    mode: QUICK ? 'quick' : 'full',
    machine: machine(),
    seconds: Math.round((Date.now() - started) / 1000),
    figures,
    ratios: ratiosOf(
      figures,
      forwarders.map((f) => f.name),
    ),
  };
  // A partial run (--only) must not overwrite the full results docs/performance.md quotes.
  writeResults(result, process.argv.includes('--only') ? `only-${ONLY}.json` : 'latest.json');
  printReport(result);
  service.store.close();
  killChildren('SIGTERM');
  await new Promise((r) => setTimeout(r, 1_500));
  killChildren('SIGKILL');
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  killChildren('SIGKILL');
  process.exit(1);
});
