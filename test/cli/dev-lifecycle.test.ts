/**
 * How the local stack starts and stops as an operator meets it: `npm start` stopped by a process
 * supervisor (SIGTERM to npm's own process, which npm does not pass on), and a port already taken
 * at start (the message names the flag that moves it).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { type AddressInfo, connect, createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { waitFor } from '../support/wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FREE_PORTS = ['--api-port', '0', '--relay-port', '0', '--http-port', '0', '--store-port', '0'];

/** Every live descendant of `pid` (children, their children …), from /proc. */
function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // Fields after the command (which may hold spaces) in brackets: state, ppid, …
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (state !== 'Z') parentOf.set(Number(name), Number(ppid));
    } catch {
      // Gone meanwhile.
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [child, parent] of parentOf) {
      if (parent === p) {
        out.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return out;
}

const alive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};

/** True when something accepts connections on 127.0.0.1:port. */
const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

describe('npm start under a process supervisor (issue 28 item 6)', () => {
  let npm: ChildProcess | undefined;
  let started: number[] = [];
  afterAll(() => {
    // Only what this test started, by pid.
    for (const pid of [npm?.pid, ...started]) {
      if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  it('SIGTERM to npm`s own process stops the whole stack: its processes end, its ports are freed', async () => {
    npm = spawn('npm', ['start', '--', '--memory', ...FREE_PORTS], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, npm_config_update_notifier: 'false' },
    });
    let out = '';
    npm.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
    });
    npm.stderr?.on('data', (c: Buffer) => {
      out += c.toString();
    });
    await waitFor(() => /^ready$/m.test(out), 90_000);
    const api = Number(new URL(/RENDEZVOUS_API=(\S+)/.exec(out)?.[1] as string).port);
    const store = Number(new URL(/AWS_ENDPOINT_URL_DYNAMODB=(\S+)/.exec(out)?.[1] as string).port);
    const relay = Number(/relay {2}127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
    const ports = [api, store, relay];
    for (const p of ports) expect(await listening(p)).toBe(true);
    started = descendants(npm.pid as number);
    expect(started.length).toBeGreaterThan(0);

    // What a supervisor does: SIGTERM to the process it started (npm), and nothing else.
    npm.kill('SIGTERM');
    await waitFor(() => started.every((pid) => !alive(pid)), 30_000);
    for (const p of ports) expect(await listening(p), `port ${p}`).toBe(false);
  }, 180_000);
});

describe('a port already in use at start (issue 28 item 9)', () => {
  const servers: Server[] = [];
  afterAll(() => {
    for (const s of servers) s.close();
  });
  const taken = async () => {
    const s = createServer();
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return String((s.address() as AddressInfo).port);
  };

  it('names the flag that moves the port in use', async () => {
    const storePort = await taken();
    const store = await runCli(['dev', '--memory', ...FREE_PORTS.slice(0, 6), '--store-port', storePort]);
    expect(store.code).toBe(1);
    expect(store.stderr).toBe(
      `rendezvous: cannot start: 127.0.0.1:${storePort} is in use: the store's port; choose another with --store-port (0 picks a free one)\n`,
    );
    const apiPort = await taken();
    const api = await runCli(['dev', '--memory', ...FREE_PORTS.slice(2), '--api-port', apiPort]);
    expect(api.code).toBe(1);
    expect(api.stderr).toContain(
      `127.0.0.1:${apiPort} is in use: the API's port; choose another with --api-port`,
    );
  }, 180_000);
});
