/**
 * The CLI as a user runs it: `rendezvous dev` in one process, `provision`, `expose` in another,
 * `connect` on stdin/stdout in a third — carrying real TCP services, and a real ssh session
 * through `connect` as its ProxyCommand.
 */

import type { ChildProcess } from 'node:child_process';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { newTotpSecret, otpauthUri } from '../../core/totp.js';
import { connect as connectToHidden } from '../../index.js';
import { Store } from '../../server/store/index.js';
import { BIN, exitWithin, runCli, spawnCli, stop, waitForOutput } from '../support/cli.js';
import { floodGenericResets, floodHttpResets, startFreezableWebServer } from '../support/flood.js';
import { closedPort, dial, readAll, sha256, startEchoServer } from '../support/net.js';
import { type Sshd, startSshd } from '../support/sshd.js';

// Every test here starts CLI processes from source (tsx compiles each at start: seconds on a
// busy machine) besides what it measures; what a user would notice keeps its own bound inside.
vi.setConfig({ testTimeout: 90_000 });

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

async function provisionAndExpose(uuid: string, targetPort: number, extra: string[] = []) {
  const p = await runCli(['provision', '--uuid', uuid, '--json'], env);
  expect(p.code, p.stderr).toBe(0);
  const id = JSON.parse(p.stdout.toString());
  expect(Object.keys(id).sort()).toEqual(['digits', 'otpauth', 'secret', 'step', 'uuid']);
  const agent = spawnCli(['expose', '--uuid', uuid, '--to', `127.0.0.1:${targetPort}`, ...extra], {
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

  it('connect --listen with a bad port says so in one line, without a stack trace', async () => {
    for (const bad of ['99999', 'abc', '127.0.0.1:70000']) {
      const r = await runCli(['connect', '--uuid', 'cli-echo', '--listen', bad], env, '');
      expect(r.code, bad).toBe(2);
      expect(r.stderr, bad).toContain(`--listen ${bad}: not a port number`);
      expect(r.stderr, bad).not.toMatch(/\n\s+at /);
    }
  });

  it('expose stops with an authentication error for a wrong secret instead of retrying', async () => {
    await runCli(['provision', '--uuid', 'cli-wrong'], env);
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      // A 5 s step: the agent tries the next steps' codes before it concludes (about 3 steps).
      const child = spawnCli(['expose', '--uuid', 'cli-wrong', '--to', '1'], {
        ...env,
        RENDEZVOUS_SECRET: 'otpauth://totp/cli-wrong?secret=JBSWY3DPEHPK3PXP&period=5',
      });
      let stderr = '';
      child.stderr?.on('data', (c) => {
        stderr += c.toString();
      });
      child.on('exit', (code) => resolve({ code, stderr }));
    });
    expect(r.code).toBe(1);
    // Names both causes, which the server cannot tell apart: an identity this registry does not
    // know (a store that was wiped) and a wrong secret.
    expect(r.stderr).toContain('authentication failed: wrong secret or unknown uuid for uuid cli-wrong');
    expect(r.stderr).not.toContain('JBSWY3DPEHPK3PXP');
  }, 60_000);

  it('printf "GET / HTTP/1.0" | connect prints the page and exits (issue 13)', async () => {
    const web: Server = createServer((req, res) => res.end(`page for ${req.url}`));
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    try {
      await provisionAndExpose('cli-printf', (web.address() as AddressInfo).port);
      const child = spawnCli(['connect', '--uuid', 'cli-printf'], env);
      let out = '';
      child.stdout?.on('data', (c) => {
        out += c.toString();
      });
      child.stdin?.end('GET /printf HTTP/1.0\r\n\r\n');
      expect(await exitWithin(child, 15_000)).toBe(0);
      expect(out).toMatch(/^HTTP\/1\.[01] 200 OK\r\n[\s\S]*\r\n\r\npage for \/printf$/);
    } finally {
      web.close();
    }
  });

  it('connect on stdio gets EOF on stdout when the far side ends, while stdin is still open', async () => {
    // The hidden service says one line and closes; the mobile side never ends its stdin.
    const talker = createNetServer((s) => s.end('bye\n'));
    await new Promise<void>((r) => talker.listen(0, '127.0.0.1', r));
    try {
      await provisionAndExpose('cli-halfclose', (talker.address() as AddressInfo).port);
      const child = spawnCli(['connect', '--uuid', 'cli-halfclose'], env);
      let out = '';
      child.stdout?.on('data', (c) => {
        out += c.toString();
      });
      const stdoutEnded = new Promise<void>((r) => child.stdout?.once('end', () => r()));
      await Promise.race([
        stdoutEnded,
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(`no EOF on stdout; got ${out}`)), 15_000),
        ),
      ]);
      expect(out).toBe('bye\n');
      // Our direction is still open until stdin ends; then connect exits 0.
      child.stdin?.end();
      expect(await exitWithin(child, 15_000)).toBe(0);
    } finally {
      talker.close();
    }
  });
});

describe("connect --listen when the hidden side's target is down (issue 13)", () => {
  it('the local client is reset and connect says why on stderr', async () => {
    const deadPort = await closedPort();
    await provisionAndExpose('cli-listen-down', deadPort);
    const mobile = spawnCli(['connect', '--uuid', 'cli-listen-down', '--listen', '127.0.0.1:0'], env);
    agents.push(mobile);
    const line = await waitForOutput(mobile, /listening on 127\.0\.0\.1:(\d+)/, 20_000, 'stderr');
    const port = /listening on 127\.0\.0\.1:(\d+)/.exec(line)?.[1];
    const hint = waitForOutput(mobile, /target is probably down/, 20_000, 'stderr');
    const curl = await promisify(execFile)('curl', [
      '-sS',
      '--max-time',
      '10',
      `http://127.0.0.1:${port}/`,
    ]).then(
      () => 'answered',
      (err: { code?: number }) => `failed ${err.code}`,
    );
    expect(curl).toMatch(/^failed (52|56)$/);
    await hint;
    expect(mobile.exitCode).toBeNull();
  });
});

describe('expose under a flood of resetting mobile clients (issue 12 item 2)', () => {
  it('generic: expose keeps serving after 300 mobile clients reset mid-rendezvous', async () => {
    const echo = await startEchoServer();
    try {
      const { agent } = await provisionAndExpose('cli-rst', echo.port, ['--pool', '4']);
      await floodGenericResets(env.RENDEZVOUS_API as string, 'cli-rst', 300);
      expect(agent.exitCode).toBeNull();
      const r = await runCli(['connect', '--uuid', 'cli-rst'], env, 'after the flood');
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.toString()).toBe('after the flood');
      expect(agent.exitCode).toBeNull();
    } finally {
      await echo.close();
    }
  });

  it('HTTP-specific: expose --protocol http keeps serving after mobile requests reset', async () => {
    const web = await startFreezableWebServer();
    try {
      const p = await runCli(['provision', '--uuid', 'cli-rst-http', '--json'], env);
      const id = JSON.parse(p.stdout.toString());
      const agent = spawnCli(
        ['expose', '--protocol', 'http', '--pool', '4', '--uuid', 'cli-rst-http', '--to', String(web.port)],
        { ...env, RENDEZVOUS_SECRET: id.secret },
      );
      agents.push(agent);
      await waitForOutput(agent, /registered/, 20_000, 'stderr');
      const httpPort = Number(new URL(env.RENDEZVOUS_RELAY_HTTP as string).port);
      // Resets while the agent is still reaching its (frozen) target, then while it serves.
      await web.freeze();
      await floodHttpResets(httpPort, 'cli-rst-http', 150);
      web.thaw();
      await floodHttpResets(httpPort, 'cli-rst-http', 200);
      expect(agent.exitCode).toBeNull();
      const { stdout } = await promisify(execFile)('curl', [
        '-sS',
        '--max-time',
        '10',
        `${env.RENDEZVOUS_RELAY_HTTP}/after?rendezvous=cli-rst-http`,
      ]);
      expect(stdout).toBe('still serving /after?rendezvous=cli-rst-http');
      expect(agent.exitCode).toBeNull();
    } finally {
      web.close();
    }
  });

  it('HTTP-specific: a target that is down answers the mobile client 502 with a JSON body', async () => {
    const p = await runCli(['provision', '--uuid', 'cli-down-http', '--json'], env);
    const id = JSON.parse(p.stdout.toString());
    const agent = spawnCli(['expose', '--protocol', 'http', '--uuid', 'cli-down-http', '--to', '1'], {
      ...env,
      RENDEZVOUS_SECRET: id.secret,
    });
    agents.push(agent);
    await waitForOutput(agent, /registered/, 20_000, 'stderr');
    const { stdout } = await promisify(execFile)('curl', [
      '-sS',
      '--max-time',
      '10',
      '-w',
      '\n%{http_code}',
      `${env.RENDEZVOUS_RELAY_HTTP}/x?rendezvous=cli-down-http`,
    ]);
    const [body, status] = stdout.split('\n');
    expect(status).toBe('502');
    expect(JSON.parse(body as string)).toEqual({
      error: { permanent: false, diagnostic: "the hidden server's target is unreachable" },
    });
  });
});

describe('agent restarts inside one TOTP step (issue 13)', () => {
  it('an agent restarted five times in a row stays up: every process registers and serves', async () => {
    // A 5 s step (an identity parameter) so that six registrations need several steps quickly.
    const store = new Store({
      table: env.RENDEZVOUS_TABLE as string,
      endpoint: env.AWS_ENDPOINT_URL_DYNAMODB,
      region: 'local',
    });
    const params = { secret: newTotpSecret(), digits: 6, step: 5, algorithm: 'SHA1' as const };
    try {
      await store.createIdentity({
        uuid: 'cli-restart',
        createdAt: Math.floor(Date.now() / 1000),
        ...params,
      });
    } finally {
      store.close();
    }
    const secret = otpauthUri(params, 'cli-restart');
    const echo = await startEchoServer();
    try {
      for (let i = 0; i < 6; i++) {
        const agent = spawnCli(['expose', '--uuid', 'cli-restart', '--to', String(echo.port)], {
          ...env,
          RENDEZVOUS_SECRET: secret,
        });
        agents.push(agent);
        await waitForOutput(agent, /registered/, 40_000, 'stderr');
        // The library's connect (in this process) keeps each round short, so that restarts
        // come faster than the 5 s step.
        const socket = await connectToHidden({ api: env.RENDEZVOUS_API as string, uuid: 'cli-restart' });
        const back = readAll(socket);
        socket.end(`run ${i}`);
        expect((await back).toString()).toBe(`run ${i}`);
        await stop(agent);
      }
    } finally {
      await echo.close();
    }
  }, 120_000);
});

describe('npm start keeps its state across restarts (issue 13)', () => {
  let folder: string | undefined;
  let first: ChildProcess | undefined;
  let second: ChildProcess | undefined;
  afterAll(async () => {
    await stop(first);
    await stop(second);
    if (folder) rmSync(folder, { recursive: true, force: true });
  });

  it('dev keeps identities in .rendezvous/ by default and says where; --memory does not', async () => {
    folder = mkdtempSync(join(tmpdir(), 'rendezvous-dev-'));
    const ports = ['--api-port', '0', '--relay-port', '0', '--http-port', '0', '--store-port', '0'];
    const envOf = (out: string) => {
      const e: Record<string, string> = {};
      for (const m of out.matchAll(/^ {2}export (\w+)=(.*)$/gm)) e[m[1] as string] = m[2] as string;
      return e;
    };
    first = spawnCli(['dev', ...ports], {}, folder);
    const out1 = await waitForOutput(first, /^ready$/m);
    expect(out1).toContain(`on disk: ${join(folder, '.rendezvous')}`);
    const env1 = envOf(out1);
    // A second dev on the same folder says so instead of fighting over the store.
    const clash = await runCli(['dev', ...ports], {}, undefined, folder);
    expect(clash.code).toBe(1);
    expect(clash.stderr).toContain('is in use by another rendezvous dev');
    const p = await runCli(['provision', '--uuid', 'kept', '--json'], env1);
    expect(p.code, p.stderr).toBe(0);
    const id = JSON.parse(p.stdout.toString());
    await stop(first);

    second = spawnCli(['dev', ...ports], {}, folder);
    const env2 = envOf(await waitForOutput(second, /^ready$/m));
    const echo = await startEchoServer();
    try {
      const agent = spawnCli(['expose', '--uuid', 'kept', '--to', String(echo.port)], {
        ...env2,
        RENDEZVOUS_SECRET: id.secret,
      });
      agents.push(agent);
      await waitForOutput(agent, /registered/, 20_000, 'stderr');
      const r = await runCli(['connect', '--uuid', 'kept'], env2, 'survived a restart');
      expect(r.stdout.toString(), r.stderr).toBe('survived a restart');
    } finally {
      await echo.close();
    }
    await stop(second);
    const mem = spawnCli(['dev', '--memory', ...ports], {}, folder);
    try {
      expect(await waitForOutput(mem, /^ready$/m)).toContain('in memory');
    } finally {
      await stop(mem);
    }
  }, 90_000);
});

describe('ssh through the rendezvous (real sshd, real ssh client, connect as ProxyCommand)', () => {
  let sshd: Sshd | undefined;
  let sshdPort = 0;

  beforeAll(async () => {
    sshd = await startSshd();
    sshdPort = sshd.port;
  });

  afterAll(async () => {
    await sshd?.close();
  });

  it('runs a command over ssh with `rendezvous connect` as ProxyCommand', async () => {
    await provisionAndExpose('cli-ssh', sshdPort);
    const proxy = `${process.execPath} ${BIN} connect --uuid cli-ssh`;
    // Asynchronous: a synchronous ssh would stop this process from reading its children's output
    // (dev's relay, the agents) for as long as ssh runs.
    const { stdout } = await promisify(execFile)(
      'ssh',
      [
        ...(sshd as Sshd).sshArgs,
        '-o',
        `ProxyCommand=${proxy}`,
        (sshd as Sshd).destination,
        'echo ssh-through-rendezvous-ok',
      ],
      { env: { ...process.env, ...env }, timeout: 60_000 },
    );
    expect(stdout.trim()).toBe('ssh-through-rendezvous-ok');
  });

  it("ssh ends within seconds, with a message, when the hidden side's sshd is down (issue 13)", async () => {
    // A port nothing listens on (nor will: see closedPort): the agent's target refuses every connection.
    const deadPort = await closedPort();
    await provisionAndExpose('cli-ssh-down', deadPort);
    const proxy = `${process.execPath} ${BIN} connect --uuid cli-ssh-down`;
    const ssh = spawn(
      'ssh',
      [...(sshd as Sshd).sshArgs, '-o', `ProxyCommand=${proxy}`, (sshd as Sshd).destination, 'echo never'],
      { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    ssh.stderr?.on('data', (c) => {
      stderr += c.toString();
    });
    // ssh has no timeout of its own for the server's banner: before the fix it waited forever.
    const code = await exitWithin(ssh, 15_000);
    expect(code).toBe(255);
    expect(stderr).toContain('rendezvous: the hidden server ended the connection before sending anything');
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
