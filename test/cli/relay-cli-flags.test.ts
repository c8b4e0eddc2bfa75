/**
 * `rendezvous relay` runs the production bundle with the container's V8 flags (issue 19): the
 * process that holds the sockets is `node <Dockerfile flags> dist/relay.mjs`, read from its
 * /proc/<pid>/cmdline; a SIGTERM to the launcher drains it, and a launcher killed outright takes it
 * along.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { containerMallocEnv, containerNodeFlags } from '../../cli/relay-exec.js';
import { BIN, exitWithin } from '../support/cli.js';
import { embeddedStore } from '../support/store.js';
import { waitFor } from '../support/wait.js';

let store: Awaited<ReturnType<typeof embeddedStore>>;

beforeAll(async () => {
  execFileSync(process.execPath, ['scripts/build.mjs', 'relay'], { stdio: 'ignore', timeout: 60_000 });
  store = await embeddedStore();
}, 90_000);
afterAll(() => store?.close());

async function startCliRelay() {
  const child = spawn(process.execPath, [BIN, 'relay'], {
    env: {
      ...process.env,
      AWS_ENDPOINT_URL_DYNAMODB: store.endpoint,
      AWS_REGION: 'local',
      RENDEZVOUS_TABLE: store.store.table,
      RELAY_BIND: '127.0.0.1',
      RELAY_PORT: '0',
      RELAY_HTTP_PORT: 'off',
      RELAY_HEALTH_PORT: '0',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let text = '';
  child.stdout?.on('data', (c: Buffer) => {
    text += c.toString();
  });
  await waitFor(() => text.includes('"relay listening"'), 30_000, 'relay listening');
  const health = Number(/"health":"[^"]*:(\d+)"/.exec(text)?.[1]);
  const res = await fetch(`http://127.0.0.1:${health}/healthz`);
  const { pid } = (await res.json()) as { pid: number };
  return { child, pid };
}

const alive = (pid: number) =>
  existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));

describe('rendezvous relay', () => {
  it('serves from dist/relay.mjs under the Dockerfile ENTRYPOINT flags, and drains on SIGTERM', async () => {
    const flags = containerNodeFlags();
    // What a parked socket costs sizes a task: a small young generation, no kept old-space pages.
    expect(flags).toContain('--max-semi-space-size=2');
    expect(flags.some((f) => f.startsWith('--initial-old-space-size'))).toBe(false);
    const { child, pid } = await startCliRelay();
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    expect(pid).not.toBe(child.pid);
    expect(argv.slice(1, 1 + flags.length)).toEqual(flags);
    expect(argv[1 + flags.length]).toMatch(/dist\/relay\.mjs$/);
    expect(argv.join(' ')).not.toContain('tsx');
    // …and the Dockerfile's glibc settings (MALLOC_*), which halve CPU per GiB.
    const malloc = containerMallocEnv();
    expect(Object.keys(malloc).length).toBeGreaterThan(0);
    const environ = Object.fromEntries(
      readFileSync(`/proc/${pid}/environ`, 'utf8')
        .split('\0')
        .filter(Boolean)
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
    );
    expect(environ).toMatchObject(malloc);
    child.kill('SIGTERM');
    expect(await exitWithin(child, 20_000)).toBe(0);
    await waitFor(() => !alive(pid), 5_000, 'relay process gone');
  }, 60_000);

  it('a launcher killed with SIGKILL takes the relay with it', async () => {
    const { child, pid } = await startCliRelay();
    child.kill('SIGKILL');
    await waitFor(() => !alive(pid), 10_000, 'relay process gone after its launcher');
  }, 60_000);
});
