/**
 * `rendezvous import --redis`: the original's records read straight from a real redis-server
 * (its own, on a free port, password-protected), written there with redis-cli the way the
 * original stored them (a JSON string under the uuid).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runCli, stop, waitForOutput } from '../support/cli.js';
import { embeddedStore } from '../support/store.js';
import { originalAsciiSecret, originalRecord } from './original-model.js';

// Each test runs the real command several times: room for a loaded 2-core machine.
vi.setConfig({ testTimeout: 120_000 });

const run = promisify(execFile);
const PASSWORD = 'redis-password-for-tests';
let env: Awaited<ReturnType<typeof embeddedStore>>;
let redis: ChildProcess;
let port: number;
const secrets = [originalAsciiSecret(), originalAsciiSecret()];

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return p;
}

const cli = (...args: string[]) => ['-h', '127.0.0.1', '-p', String(port), ...args];
const redisEnv = { ...process.env, REDISCLI_AUTH: PASSWORD };

beforeAll(async () => {
  if (!existsSync('/usr/bin/redis-server')) {
    throw new Error('redis-server not found: apt-get install -y redis-server (.ci/run does)');
  }
  env = await embeddedStore();
  port = await freePort();
  redis = spawn(
    '/usr/bin/redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--requirepass',
      PASSWORD,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  await waitForOutput(redis, /Ready to accept connections/, 20_000);
  await run('redis-cli', cli('SET', 'redis-one', originalRecord('redis-one', secrets[0] as string)), {
    env: redisEnv,
  });
  await run('redis-cli', cli('SET', 'redis-two', originalRecord('redis-two', secrets[1] as string)), {
    env: redisEnv,
  });
  await run('redis-cli', cli('RPUSH', 'some-list', 'not a record'), { env: redisEnv });
}, 60_000);

afterAll(async () => {
  await stop(redis);
  await env?.close();
});

const cliEnv = () => ({
  AWS_ENDPOINT_URL_DYNAMODB: env.endpoint,
  AWS_REGION: 'local',
  RENDEZVOUS_TABLE: env.store.table,
  REDISCLI_AUTH: PASSWORD,
});

describe('import --redis', () => {
  it('imports every identity record, leaves other key types out, and is idempotent', async () => {
    const first = await runCli(['import', '--redis', `redis://127.0.0.1:${port}`], cliEnv());
    const out = first.stdout.toString();
    expect(out).toMatch(/^imported 2, unchanged 0/);
    expect(first.stderr).toContain('1 redis key is not a string (left out; named in the report)');
    expect(out).toContain('  skipped    some-list: not a string (list)\n');
    expect(first.code).toBe(0);
    for (const s of secrets) expect(out + first.stderr).not.toContain(s);
    expect((await env.store.getIdentity('redis-one'))?.secret).toBe(secrets[0]);
    expect((await env.store.getIdentity('redis-two'))?.compat?.digits).toBe('original');

    const again = await runCli(['import', '--redis', `redis://127.0.0.1:${port}`], cliEnv());
    expect(again.stdout.toString()).toMatch(/^imported 0, unchanged 2/);
  });

  it('a wrong password, a password in the URL and an unreachable redis are clear errors', async () => {
    const wrong = await runCli(['import', '--redis', `redis://127.0.0.1:${port}`], {
      ...cliEnv(),
      REDISCLI_AUTH: 'nope',
    });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/redis refused AUTH/);
    expect(wrong.stderr).not.toContain('nope');

    const inUrl = await runCli(['import', '--redis', `redis://:${PASSWORD}@127.0.0.1:${port}`], cliEnv());
    expect(inUrl.code).toBe(1);
    expect(inUrl.stderr).toContain('REDISCLI_AUTH');

    const gone = await runCli(['import', '--redis', `redis://127.0.0.1:${await freePort()}`], cliEnv());
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain('ECONNREFUSED');
  });
});

describe('import --redis against a server without SCAN (issue 25: nedis has none)', () => {
  let bare: ChildProcess | undefined;
  let barePort = 0;
  let dir = '';
  const bareSecret = originalAsciiSecret();

  beforeAll(async () => {
    // A real redis-server whose SCAN is renamed away answers as nedis does: unknown command.
    dir = await mkdtemp('/tmp/rv-noscan-');
    barePort = await freePort();
    await writeFile(
      `${dir}/redis.conf`,
      `port ${barePort}\nbind 127.0.0.1\nsave ""\nappendonly no\nrename-command SCAN ""\n`,
    );
    bare = spawn('/usr/bin/redis-server', [`${dir}/redis.conf`], { stdio: ['ignore', 'pipe', 'pipe'] });
    await waitForOutput(bare, /Ready to accept connections/, 20_000);
    const at = ['-h', '127.0.0.1', '-p', String(barePort)];
    await run('redis-cli', [...at, 'SET', 'noscan-one', originalRecord('noscan-one', bareSecret)]);
    await run('redis-cli', [...at, 'SET', 'noscan-text', 'hello']);
    await run('redis-cli', [...at, 'HSET', 'noscan-hash', 'f', 'v']);
    await run('redis-cli', [...at, 'HSET', 'noscan-hash2', 'f', 'v']);
  }, 60_000);

  afterAll(async () => {
    await stop(bare);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('falls back to KEYS with one warning, and names every key`s fate', async () => {
    const { REDISCLI_AUTH: _none, ...noAuth } = cliEnv();
    const r = await runCli(['import', '--redis', `redis://127.0.0.1:${barePort}`], noAuth);
    const out = r.stdout.toString();
    expect(r.stderr).not.toContain('unknown command');
    expect(r.stderr.match(/no SCAN/g)).toHaveLength(1);
    expect(r.stderr).toContain('listing the keys with one KEYS * instead');
    expect(r.stderr).toContain('2 redis keys are not strings');
    expect(out).toContain('  imported   noscan-one\n');
    expect(out).toContain('  skipped    noscan-text: not JSON\n');
    expect(out).toContain('  skipped    noscan-hash: not a string (hash)\n');
    expect(out).not.toContain(bareSecret);
    expect((await env.store.getIdentity('noscan-one'))?.secret).toBe(bareSecret);
  }, 120_000);
});
