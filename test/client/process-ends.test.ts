/**
 * How a process that uses the library ends: `close()` of an HTTP-specific hidden server lets it
 * exit at once (no timer outlives the sockets), and a fatal error nobody listens for is a
 * warning, not a crash. Each case runs the library in a child process of its own.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack.js';
import { exitWithin, waitForOutput } from '../support/cli.js';
import { provision, startStack } from '../support/stack.js';

const CHILD = fileURLToPath(new URL('./fixtures/hidden-server-child.ts', import.meta.url));

let stack: LocalStack;
const children: ChildProcess[] = [];

beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await stack?.close();
});

function child(env: Record<string, string>): { proc: ChildProcess; stderr: () => string } {
  const proc = spawn(process.execPath, ['--import', 'tsx', CHILD], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(proc);
  let err = '';
  proc.stderr?.on('data', (c) => {
    err += c.toString();
  });
  return { proc, stderr: () => err };
}

describe('a process using the library ends when it should (issue 13)', () => {
  it('HTTP-specific close() lets the process exit promptly (was: a 30 s read timer)', async () => {
    const id = await provision(stack, { uuid: 'proc-close-http' });
    const { proc, stderr } = child({
      MODE: 'close-http',
      RELAY: `http://127.0.0.1:${stack.httpPort}`,
      UUID: 'proc-close-http',
      SECRET: id.secret,
    });
    await waitForOutput(proc, /closed/, 20_000);
    // 10 s is a third of the timer that used to hold it; a prompt exit takes milliseconds.
    expect(await exitWithin(proc, 10_000), stderr()).toBe(0);
  });

  it('close() while a CONNECT awaits its answer lets the process exit promptly', async () => {
    // A relay that takes the CONNECT and never answers: the agent's read of the answer is pending.
    let sawConnect!: () => void;
    const connectSeen = new Promise<void>((r) => {
      sawConnect = r;
    });
    const silent: Server = createServer((s) => {
      s.on('error', () => undefined);
      s.once('data', () => sawConnect());
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const { proc, stderr } = child({
        MODE: 'close-pending',
        RELAY: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`,
        UUID: 'proc-pending',
        SECRET: 'JBSWY3DPEHPK3PXP',
      });
      await connectSeen;
      proc.stdin?.write('close\n');
      await waitForOutput(proc, /closed/, 20_000);
      // The read used to hold the loop for its 30 s timeout; a prompt exit takes milliseconds.
      expect(await exitWithin(proc, 10_000), stderr()).toBe(0);
    } finally {
      silent.close();
    }
  });

  it('a wrong secret with no error listener: a warning and a clean exit, not an unhandled error', async () => {
    await provision(stack, { uuid: 'proc-wrong' });
    const { proc, stderr } = child({
      MODE: 'wrong-secret',
      API: stack.apiUrl,
      UUID: 'proc-wrong',
      // A 1 s step keeps the agent's retries on later steps short.
      SECRET: 'otpauth://totp/proc-wrong?secret=JBSWY3DPEHPK3PXP&period=1',
    });
    expect(await exitWithin(proc, 20_000), stderr()).toBe(0);
    expect(stderr()).toContain('RendezvousWarning');
    expect(stderr()).toContain('authentication failed');
    expect(stderr()).not.toContain("Unhandled 'error' event");
    expect(stderr()).not.toContain('JBSWY3DPEHPK3PXP');
  });
});
