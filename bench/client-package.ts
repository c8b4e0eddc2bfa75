/**
 * The client package's figures for `npm run bench` (issue 15): the packed tarball installed into
 * an empty folder — packages, bytes on disk, tarball size — and how long the installed
 * `rendezvous connect --help` takes (the target is ≤ 150 ms; every ssh ProxyCommand pays this
 * start-up), beside a bare `node -e 0` and the in-repository CLI that tsx compiles from source.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { installTarball, packClient, ROOT, treeStats } from '../test/support/client-package.js';

/** Values (one per run) and their unit, per figure name. */
export type RawFigures = Record<string, { values: number[]; unit: string }>;

/** Wall-clock milliseconds of one run of `file args` to its exit. */
function timeRun(file: string, args: string[]): number {
  const env = { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}` };
  const t = performance.now();
  execFileSync(file, args, { env, stdio: 'ignore' });
  return performance.now() - t;
}

/** Packs and installs the client package, then measures it `runs` times (interleaved). */
export async function benchClientPackage(runs: number): Promise<RawFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'rendezvous-bench-client-'));
  try {
    const packed = await packClient(dir);
    const app = await installTarball(packed.tarball, dir);
    const stats = treeStats(join(app, 'node_modules'));
    const bin = join(app, 'node_modules/.bin/rendezvous');
    const installed: number[] = [];
    const bare: number[] = [];
    const fromSource: number[] = [];
    timeRun(bin, ['connect', '--help']); // warms the file cache, as every later ssh finds it
    const overhead: number[] = [];
    // Start-ups are short and the machine is shared: many runs, each paired with a bare node
    // started next to it, so the difference (what the CLI itself costs) survives the noise.
    for (let r = 0; r < runs * 4; r++) {
      const i = timeRun(bin, ['connect', '--help']);
      const b = timeRun(process.execPath, ['-e', '0']);
      installed.push(i);
      bare.push(b);
      overhead.push(i - b);
      if (r < runs)
        fromSource.push(timeRun(process.execPath, [join(ROOT, 'bin/rendezvous.js'), 'connect', '--help']));
    }
    return {
      'client package: installed `rendezvous connect --help`': { values: installed, unit: 'ms' },
      'client package: bare `node -e 0` (floor)': { values: bare, unit: 'ms' },
      'client package: installed `connect --help` minus bare node (paired)': { values: overhead, unit: 'ms' },
      'client package: in-repo `rendezvous connect --help` (tsx from source)': {
        values: fromSource,
        unit: 'ms',
      },
      'client package: packages installed': { values: [stats.packages.length], unit: '' },
      'client package: installed size': { values: [stats.bytes / 1e6], unit: 'MB' },
      'client package: tarball size': { values: [packed.size / 1e3], unit: 'KB' },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
