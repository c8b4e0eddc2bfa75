/** Running the real `rendezvous` command as a child process, the way a user does. */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository's root directory (with a trailing slash). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The package's bin entry: the TypeScript source through tsx, as `npx rendezvous` runs it. */
export const SOURCE_BIN = `${ROOT}bin/rendezvous.js`;

/**
 * The CLI bundled from this source before the run (test/support/global-setup.ts). One level
 * below the root, as dist/cli.mjs: the CLI finds package.json and the relay's bundle from there.
 */
export const BUNDLE_BIN = `${ROOT}dist/test-cli.mjs`;

/**
 * What the tests start as `rendezvous`: the bundle (the same code, without compiling it again at
 * each start), or the source with RENDEZVOUS_TEST_CLI=source.
 */
export const BIN = process.env.RENDEZVOUS_TEST_CLI === 'source' ? SOURCE_BIN : BUNDLE_BIN;

/**
 * Spawns `rendezvous …args` with `env` added to this process's environment (in `cwd` if given),
 * through `bin` (BIN unless given).
 */
export function spawnCli(
  args: string[],
  env: Record<string, string> = {},
  cwd?: string,
  bin: string = BIN,
): ChildProcess {
  return spawn(process.execPath, [bin, ...args], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
    cwd,
  });
}

/** Resolves with the child's exit code, or rejects after `ms` (the child is then killed). */
export function exitWithin(child: ChildProcess, ms: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`still running after ${ms} ms`));
    }, ms);
    child.once('exit', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
}

/** Collects a child's stdout until `pattern` matches; rejects on exit or after `ms`. */
export function waitForOutput(
  child: ChildProcess,
  pattern: RegExp,
  ms = 20_000,
  stream: 'stdout' | 'stderr' = 'stdout',
): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    let errText = '';
    const t = setTimeout(() => done(new Error(`no ${pattern} within ${ms} ms; saw: ${text}${errText}`)), ms);
    const onOut = (c: Buffer) => {
      text += c.toString();
      if (pattern.test(text)) done();
    };
    const onErr = (c: Buffer) => {
      errText += c.toString();
    };
    const onExit = (code: number | null) =>
      done(new Error(`exited ${code} before ${pattern}: ${text}${errText}`));
    const done = (err?: Error) => {
      clearTimeout(t);
      child[stream]?.off('data', onOut);
      child.stderr?.off('data', onErr);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(text);
    };
    child[stream]?.on('data', onOut);
    if (stream !== 'stderr') child.stderr?.on('data', onErr);
    child.on('exit', onExit);
  });
}

/** Runs `rendezvous …args` to completion (in `cwd` if given, through `bin` if given). */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
  input?: Buffer | string,
  cwd?: string,
  bin: string = BIN,
): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(args, env, cwd, bin);
    const out: Buffer[] = [];
    let err = '';
    child.stdout?.on('data', (c) => out.push(c));
    child.stderr?.on('data', (c) => {
      err += c.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
    child.stdin?.end(input);
  });
}

/** Stops a child with SIGTERM and waits for it. */
export function stop(child: ChildProcess | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
  });
}
