/**
 * What `npm run bench` leaves behind: the ratios of medians docs/performance.md quotes, the results file
 * (bench/results/latest.json, or only-<group>.json for `--only`), and the table on stdout with every
 * figure whose runs disagree flagged (⚠ in the table, a warning on stderr).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { type Figure, ROOT } from './harness.js';

/** A figure whose max/min exceeds this is flagged (⚠ in the table, a warning on stderr). */
const SPREAD_WARNING = 1.5;

/** One run's results, as written to bench/results/. */
export interface BenchResult {
  date: string;
  mode: 'quick' | 'full';
  machine: { cpus: number; model: string | undefined; node: string; platform: NodeJS.Platform };
  seconds: number;
  figures: Record<string, Figure>;
  ratios: Record<string, number>;
}

/** Ratios of medians: relay against each forwarder (`forwarders`, by name), and among the pairing contenders. */
export function ratiosOf(figures: Record<string, Figure>, forwarders: string[]): Record<string, number> {
  const m = (name: string) => figures[name]?.median ?? Number.NaN;
  const ratios: Record<string, number> = {};
  for (const streams of ['1 stream', '8 streams']) {
    for (const other of forwarders) {
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
  return ratios;
}

/** The machine the run measured (in the results file and the table's heading). */
export function machine(): BenchResult['machine'] {
  return {
    cpus: cpus().length,
    model: cpus()[0]?.model,
    node: process.version,
    platform: process.platform,
  };
}

/** Writes the results to bench/results/`file` (latest.json, or only-<group>.json for a partial run). */
export function writeResults(result: BenchResult, file: string): void {
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench/results', file), `${JSON.stringify(result, null, 2)}\n`);
}

/** Prints the figures and ratios as Markdown tables, warning (stderr) of every wide spread. */
export function printReport(result: BenchResult): void {
  const { figures, ratios } = result;
  // Figures under 1 (store requests per key per minute) keep three significant digits.
  const fmt = (n: number) =>
    Math.abs(n) >= 100
      ? n.toFixed(0)
      : Math.abs(n) >= 10
        ? n.toFixed(1)
        : Math.abs(n) >= 1 || n === 0
          ? n.toFixed(2)
          : n.toPrecision(3);
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
}
