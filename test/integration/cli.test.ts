/**
 * The CLI as a user runs it: `rendezvous dev` in one process, `provision`, `expose` in another,
 * `connect` on stdin/stdout in a third — carrying real TCP services, and a real ssh session
 * through `connect` as its ProxyCommand.
 */

import type { ChildProcess } from 'node:child_process';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, runCli, spawnCli, stop, waitForOutput } from '../support/cli.js';
import { dial, readAll, sha256, startEchoServer } from '../support/net.js';

let dev: ChildProcess;
const env: Record<string, string> = {};
const agents: ChildProcess[] = [];

beforeAll(async () => {
  dev = spawnCli([
    'dev',
    '--memory',
    '--api-port',
    '0',
    '--relay-port',
    '0',
    '--http-port',
    '0',
    '--store-port',
    '0',
  ]);
  const out = await waitForOutput(dev, /^ready$/m);
  for (const m of out.matchAll(/^ {2}export (\w+)=(.*)$/gm)) env[m[1] as string] = m[2] as string;
  expect(env.RENDEZVOUS_API).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
});

afterAll(async () => {
  for (const a of agents) await stop(a);
  await stop(dev);
});

async function provisionAndExpose(uuid: string, targetPort: number) {
  const p = await runCli(['provision', '--uuid', uuid, '--json'], env);
  expect(p.code, p.stderr).toBe(0);
  const id = JSON.parse(p.stdout.toString());
  expect(Object.keys(id).sort()).toEqual(['digits', 'otpauth', 'secret', 'step', 'uuid']);
  const agent = spawnCli(['expose', '--uuid', uuid, '--to', `127.0.0.1:${targetPort}`], {
    ...env,
    RENDEZVOUS_SECRET: id.secret,
  });
  agents.push(agent);
  await waitForOutput(agent, /registered/, 20_000, 'stderr');
  return { id, agent };
}

describe('rendezvous CLI', () => {
  it('dev prints its endpoints and the environment for the CLI', () => {
    expect(Object.keys(env).sort()).toEqual([
      'AWS_ENDPOINT_URL_DYNAMODB',
      'AWS_REGION',
      'RENDEZVOUS_API',
      'RENDEZVOUS_RELAY_HTTP',
      'RENDEZVOUS_TABLE',
    ]);
  });

  it('connect on stdin/stdout carries a byte stream to a service exposed with expose', async () => {
    const echo = await startEchoServer();
    try {
      await provisionAndExpose('cli-echo', echo.port);
      const payload = randomBytes(256 * 1024);
      const r = await runCli(['connect', '--uuid', 'cli-echo'], env, payload);
      expect(r.code, r.stderr).toBe(0);
      expect(sha256(r.stdout)).toBe(sha256(payload));
    } finally {
      await echo.close();
    }
  });

  it('connect --listen turns each local connection into one rendezvous (curl through it)', async () => {
    const web: Server = createServer((req, res) =>
      res.end(`hello from the hidden web server, you asked ${req.url}`),
    );
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    try {
      await provisionAndExpose('cli-web', (web.address() as AddressInfo).port);
      const mobile = spawnCli(['connect', '--uuid', 'cli-web', '--listen', '127.0.0.1:0'], env);
      agents.push(mobile);
      const line = await waitForOutput(mobile, /listening on 127\.0\.0\.1:(\d+)/, 20_000, 'stderr');
      const port = /listening on 127\.0\.0\.1:(\d+)/.exec(line)?.[1];
      for (let i = 0; i < 3; i++) {
        // Async: the hidden web server lives in this process and must keep serving meanwhile.
        const { stdout } = await promisify(execFile)('curl', [
          '-sS',
          '--max-time',
          '10',
          `http://127.0.0.1:${port}/n${i}`,
        ]);
        expect(stdout).toBe(`hello from the hidden web server, you asked /n${i}`);
      }
    } finally {
      web.close();
    }
  });

  it('expose --protocol http parks with CONNECT; curl ?rendezvous= reaches the hidden web server', async () => {
    const web: Server = createServer((req, res) =>
      res.end(`http-protocol hidden server, ${req.method} ${req.url}`),
    );
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    try {
      const p = await runCli(['provision', '--uuid', 'cli-http', '--json'], env);
      const id = JSON.parse(p.stdout.toString());
      const agent = spawnCli(
        [
          'expose',
          '--protocol',
          'http',
          '--uuid',
          'cli-http',
          '--to',
          String((web.address() as AddressInfo).port),
        ],
        { ...env, RENDEZVOUS_SECRET: id.otpauth },
      );
      agents.push(agent);
      await waitForOutput(agent, /registered/, 20_000, 'stderr');
      for (let i = 0; i < 3; i++) {
        const { stdout } = await promisify(execFile)('curl', [
          '-sS',
          '--max-time',
          '10',
          `${env.RENDEZVOUS_RELAY_HTTP}/p${i}?rendezvous=cli-http`,
        ]);
        expect(stdout).toBe(`http-protocol hidden server, GET /p${i}?rendezvous=cli-http`);
      }
    } finally {
      web.close();
    }
  });

  it('connect fails with a clear message and exit code 1 for an unregistered uuid', async () => {
    const r = await runCli(['connect', '--uuid', 'nobody'], env, '');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('rendezvous: hidden server not registered');
  });

  it('expose stops with an authentication error for a wrong secret instead of retrying', async () => {
    await runCli(['provision', '--uuid', 'cli-wrong'], env);
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawnCli(['expose', '--uuid', 'cli-wrong', '--to', '1'], {
        ...env,
        RENDEZVOUS_SECRET: 'JBSWY3DPEHPK3PXP',
      });
      let stderr = '';
      child.stderr?.on('data', (c) => {
        stderr += c.toString();
      });
      child.on('exit', (code) => resolve({ code, stderr }));
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('authentication failed: check --uuid and RENDEZVOUS_SECRET');
    expect(r.stderr).not.toContain('JBSWY3DPEHPK3PXP');
  });
});

describe('ssh through the rendezvous (real sshd, real ssh client, connect as ProxyCommand)', () => {
  const SSHD = '/usr/sbin/sshd';
  let dir: string;
  let sshd: ChildProcess | undefined;
  let sshdPort = 0;

  beforeAll(async () => {
    if (!existsSync(SSHD)) {
      throw new Error('sshd not found: install it with `apt-get install -y openssh-server` (.ci/run does)');
    }
    dir = mkdtempSync(join(tmpdir(), 'rendezvous-ssh-'));
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'user_key')]);
    writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'user_key.pub')));
    // A free port for sshd: bind 0, read it, release it.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    sshdPort = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    writeFileSync(
      join(dir, 'sshd_config'),
      [
        `Port ${sshdPort}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${join(dir, 'host_key')}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'PermitRootLogin prohibit-password',
      ].join('\n'),
    );
    if (userInfo().uid === 0) mkdirSync('/run/sshd', { recursive: true });
    sshd = spawn(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
    await waitForOutput(sshd, /Server listening/, 10_000, 'stderr');
  });

  afterAll(async () => {
    await stop(sshd);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs a command over ssh with `rendezvous connect` as ProxyCommand', async () => {
    await provisionAndExpose('cli-ssh', sshdPort);
    const proxy = `${process.execPath} ${BIN} connect --uuid cli-ssh`;
    const out = execFileSync(
      'ssh',
      [
        '-i',
        join(dir, 'user_key'),
        '-o',
        'StrictHostKeyChecking=no',
        '-o',
        'UserKnownHostsFile=/dev/null',
        '-o',
        'BatchMode=yes',
        '-o',
        'LogLevel=ERROR',
        '-o',
        `ProxyCommand=${proxy}`,
        `${userInfo().username}@hidden-server`,
        'echo ssh-through-rendezvous-ok',
      ],
      { env: { ...process.env, ...env }, timeout: 30_000 },
    ).toString();
    expect(out.trim()).toBe('ssh-through-rendezvous-ok');
  });
});

describe('rendezvous dev with RELAY_CLUSTER_SECRET: a `rendezvous relay` joins it', () => {
  let clusterDev: ChildProcess | undefined;
  let extra: ChildProcess | undefined;

  afterAll(async () => {
    await stop(extra);
    await stop(clusterDev);
  });

  it('a mobile client on the extra relay reaches a hidden server parked on the dev relay', async () => {
    clusterDev = spawnCli(
      ['dev', '--memory', '--api-port', '0', '--relay-port', '0', '--http-port', '0', '--store-port', '0'],
      {
        RELAY_CLUSTER_SECRET: 'dev-cluster-secret',
      },
    );
    const out = await waitForOutput(clusterDev, /^ready$/m);
    expect(out).toMatch(/peer {3}127\.0\.0\.1:\d+ \(cluster/);
    const devEnv: Record<string, string> = {};
    for (const m of out.matchAll(/^ {2}export (\w+)=(.*)$/gm)) devEnv[m[1] as string] = m[2] as string;
    const extraPort = await new Promise<number>((resolve) => {
      const probe = createServer();
      probe.listen(0, '127.0.0.1', () => {
        const p = (probe.address() as AddressInfo).port;
        probe.close(() => resolve(p));
      });
    });
    extra = spawnCli(['relay'], {
      ...devEnv,
      RELAY_CLUSTER_SECRET: 'dev-cluster-secret',
      RELAY_BIND: '127.0.0.1',
      RELAY_PORT: String(extraPort),
      RELAY_HTTP_PORT: 'off',
      RELAY_PEER_PORT: '0',
      RELAY_PEER_HOST: '127.0.0.1',
    });
    await waitForOutput(extra, /relay listening/);
    const echoServer = await startEchoServer();
    try {
      const p = await runCli(['provision', '--uuid', 'dev-cluster', '--json'], devEnv);
      const id = JSON.parse(p.stdout.toString());
      const agent = spawnCli(['expose', '--uuid', 'dev-cluster', '--to', String(echoServer.port)], {
        ...devEnv,
        RENDEZVOUS_SECRET: id.secret,
      });
      agents.push(agent);
      await waitForOutput(agent, /registered/, 20_000, 'stderr');
      const lookup = (await (await fetch(`${devEnv.RENDEZVOUS_API}/?uuid=dev-cluster`)).json()) as {
        result: { cookie: string };
      };
      const m = await dial(extraPort);
      const got = readAll(m);
      m.end(`${lookup.result.cookie}\nacross the cluster`);
      expect((await got).toString()).toBe('+OK\nacross the cluster');
    } finally {
      await echoServer.close();
    }
  });
});
