/**
 * What every group of `npm run bench` shares: a figure's spread over runs (median, min, max), a
 * process's CPU from /proc/<pid>/stat, child processes started and awaited until ready (and killed
 * when the bench exits), dialling and waiting for a listener on 127.0.0.1, and the relay's node
 * flags and allocator settings as deployed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { containerMallocEnv } from '../cli/relay-exec.js';

/** The repository's root (bench/..). */
export const ROOT = fileURLToPath(new URL('../', import.meta.url));
const CLK_TCK = 100;
/** Node flags from relay/Dockerfile's ENTRYPOINT (between "node" and the script). */
export const RELAY_NODE_FLAGS = (() => {
  const entry =
    /^ENTRYPOINT \[(.*)\]$/m.exec(readFileSync(join(ROOT, 'relay/Dockerfile'), 'utf8'))?.[1] ?? '';
  return (JSON.parse(`[${entry}]`) as string[]).filter((a) => a.startsWith('--'));
})();
/** MALLOC_* settings from relay/Dockerfile's ENV, so the relay is measured with its allocator as deployed. */
export const RELAY_MALLOC_ENV = containerMallocEnv();

/** What a group needs from the run: its mode, its run count, the deadline, and where figures go. */
export interface GroupContext {
  /** `--quick`: fewer runs, smaller sizes. */
  quick: boolean;
  /** Runs per figure. */
  runs: number;
  /** False once the run's deadline has passed: a group then stops adding runs. */
  timeLeft: () => boolean;
  /** Records a figure's values (one per run); a figure with no runs is reported, not recorded. */
  add: (name: string, values: number[], unit: string) => void;
}

// ---------------------------------------------------------------- figures

/**
 * user+sys CPU seconds of a process and its live children (socat forks one per connection), plus
 * what its reaped children used (cutime+cstime).
 */
export function cpuSeconds(pid: number): number {
  let total = 0;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    total += (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / CLK_TCK;
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const kids = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      for (const kid of kids ? kids.split(' ') : []) total += cpuSeconds(Number(kid));
    }
  } catch {
    // The process (or a child) is gone.
  }
  return total;
}

/** A summary over runs. */
export interface Figure {
  median: number;
  min: number;
  max: number;
  runs: number;
  unit: string;
}

/** The median, min and max of `values` (one per run). */
export function summary(values: number[], unit: string): Figure {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median =
    sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return {
    median,
    min: sorted[0] as number,
    max: sorted[sorted.length - 1] as number,
    runs: values.length,
    unit,
  };
}

/** The `p`th percentile of `values` (nearest rank, no interpolation). */
export const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
};

// ---------------------------------------------------------------- sockets

/** A connected socket to `port` on 127.0.0.1 (half-open allowed, no Nagle). */
export function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(s));
    s.setNoDelay(true);
    s.once('error', reject);
  });
}

/** A free TCP port on 127.0.0.1 (bound and released; the bench's processes then take it). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/** Waits until something accepts connections on `port` (5 s at most). */
export async function waitListening(port: number) {
  for (let i = 0; i < 100; i++) {
    try {
      (await dial(port)).destroy();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

// ---------------------------------------------------------------- child processes

/** Spawns a child and waits until its output matches `ready`. */
export function spawnReady(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  ready: RegExp,
  cwd?: string,
): Promise<{ child: ChildProcess; out: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd,
    });
    let out = '';
    let started = false;
    const t = setTimeout(() => reject(new Error(`${cmd} did not start: ${out}`)), 30_000);
    const on = (c: Buffer) => {
      // BENCH_DEBUG keeps every child's output (e.g. --trace-gc) in /tmp/bench-child-<pid>.log.
      if (process.env.BENCH_DEBUG) appendFileSync(`/tmp/bench-child-${child.pid}.log`, c);
      // Kept only until ready; after that the pipe is drained and its bytes dropped, as a
      // container's log driver drains stdout. A relay writes a record per rendezvous: holding
      // them, or a regex over the growing output, would slow this process and, through a full
      // pipe, the relay writing to it.
      if (started) return;
      out += c.toString();
      if (ready.test(out)) {
        started = true;
        clearTimeout(t);
        resolve({ child, out: () => out });
      }
    };
    child.stdout?.on('data', on);
    child.stderr?.on('data', on);
    child.once('exit', (code) => reject(new Error(`${cmd} exited ${code}: ${out}`)));
  });
}

const children: ChildProcess[] = [];
/** Adopts a started child: it is killed when the bench ends (`killChildren`, or at exit). */
export function trackProcess(child: ChildProcess): void {
  children.push(child);
}
/** Adopts the child of a `spawnReady` result and hands the result back. */
export function track<T extends { child: ChildProcess }>(x: T): T {
  children.push(x.child);
  return x;
}
/** Sends `signal` to every adopted child. */
export function killChildren(signal: NodeJS.Signals): void {
  for (const c of children) c.kill(signal);
}
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});
