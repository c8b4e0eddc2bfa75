/**
 * `rendezvous dev` as a child process (store, API and relay in one), for tests that measure the
 * service from outside: its RSS, its open file descriptors, and everything it logs.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { Store } from '../../server/store/index.js';
import { BIN } from './cli.js';

/** A running `rendezvous dev`. */
export interface DevProcess {
  child: ChildProcess;
  env: Record<string, string>;
  apiUrl: string;
  relayPort: number;
  httpPort: number;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  rssBytes(): number;
  openFds(): number;
  stop(): Promise<void>;
}

/** Starts `rendezvous dev` on free ports with `env` added (relay limits, log levels). */
export async function startDevProcess(
  env: Record<string, string> = {},
  bin: string = BIN,
): Promise<DevProcess> {
  const child = spawn(
    process.execPath,
    [bin, 'dev', '--memory', '--api-port', '0', '--relay-port', '0', '--http-port', '0', '--store-port', '0'],
    { env: { ...process.env, POWERTOOLS_LOG_LEVEL: 'INFO', ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout?.on('data', (c: Buffer) => {
    out += c.toString();
  });
  child.stderr?.on('data', (c: Buffer) => {
    out += c.toString();
  });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`dev did not start: ${out}`)), 30_000);
    const check = () => {
      if (/^ready$/m.test(out)) {
        clearTimeout(t);
        child.stdout?.off('data', check);
        resolve();
      }
    };
    child.stdout?.on('data', check);
    child.once('exit', (code) => reject(new Error(`dev exited ${code}: ${out}`)));
  });
  const vars: Record<string, string> = {};
  for (const m of out.matchAll(/^ {2}export (\w+)=(.*)$/gm)) vars[m[1] as string] = m[2] as string;
  const relayPort = Number(/relay {2}127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
  const httpPort = Number(new URL(vars.RENDEZVOUS_RELAY_HTTP as string).port);
  const pid = child.pid as number;
  return {
    child,
    env: vars,
    apiUrl: vars.RENDEZVOUS_API as string,
    relayPort,
    httpPort,
    output: () => out,
    rssBytes: () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) * 1024,
    openFds: () => readdirSync(`/proc/${pid}/fd`).length,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
      }),
  };
}

/** A Store on the dev process's embedded store and table (close it when done). */
export function storeOf(dev: DevProcess): Store {
  return new Store({
    table: dev.env.RENDEZVOUS_TABLE as string,
    endpoint: dev.env.AWS_ENDPOINT_URL_DYNAMODB,
    region: 'local',
  });
}
