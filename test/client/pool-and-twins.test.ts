/**
 * The pool as an application sees it (`listen`'s callback comes once the whole pool is parked)
 * and two agents started for one uuid by mistake: each says so once, naming the other's address
 * and when it registered, with the way to run several connections on purpose (`--pool`), instead
 * of trading refusals forever in silence.
 */
import { type AddressInfo, createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Log } from '../../core/log.js';
import { createHiddenServer, type HiddenServer } from '../../index.js';
import type { LocalStack } from '../../local/stack.js';
import { spawnCli } from '../support/cli.js';
import { provision, startStack } from '../support/stack.js';
import { waitFor } from '../support/wait.js';

let stack: LocalStack;
const agents: HiddenServer[] = [];
const closers: (() => void)[] = [];
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  for (const a of agents) a.close();
  for (const c of closers) c();
  await stack?.close();
});

function keptLog(): { lines: string[]; log: Log } {
  const lines: string[] = [];
  const line = (level: string) => (msg: string, fields?: object) =>
    void lines.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`);
  return { lines, log: { info: line('INFO'), warn: line('WARN'), error: line('ERROR') } };
}

describe('listen() with a pool', () => {
  it('calls back once every slot is parked: status() reports parked: 2 for pool: 2', async () => {
    const id = await provision(stack, { uuid: 'pool-two' });
    const agent = createHiddenServer({ api: stack.apiUrl, uuid: id.uuid, secret: id.secret, pool: 2 });
    agents.push(agent);
    await new Promise<void>((resolve, reject) => {
      agent.once('error', reject);
      agent.listen(() => resolve());
    });
    const parked = Object.values(agent.status().parked).reduce((a, b) => a + b, 0);
    expect(parked).toBe(2);
    agent.close();
  });
});

describe('two agents for one uuid', () => {
  it('each side reports the other once, with its address and time and --pool, and both keep serving', async () => {
    // 2 s steps: each re-registration needs a fresh step, so the fight is quick to see.
    const id = await provision(stack, { uuid: 'twins', params: { step: 2 } });
    const a = keptLog();
    const first = createHiddenServer({ api: stack.apiUrl, uuid: id.uuid, secret: id.otpauth, log: a.log });
    agents.push(first);
    first.on('error', () => undefined);
    await new Promise<void>((r) => first.listen(() => r()));
    // The second agent is the CLI on "another machine": its API requests leave from 127.0.0.2.
    const target = createServer((s) => s.end());
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    closers.push(() => target.close());
    const second = spawnCli(
      [
        'expose',
        '--uuid',
        id.uuid,
        '--api',
        stack.apiUrl,
        '--to',
        String((target.address() as AddressInfo).port),
      ],
      {
        RENDEZVOUS_SECRET: id.otpauth,
        RENDEZVOUS_TEST_LOCAL_ADDRESS: '127.0.0.2',
        NODE_OPTIONS: `--import ${fileURLToPath(new URL('../support/local-address.mjs', import.meta.url))}`,
      },
    );
    closers.push(() => second.kill());
    let bLog = '';
    second.stderr?.on('data', (c) => {
      bLog += c.toString();
    });
    const iso = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(?:\\.\\d+)?Z';
    const twinFrom = (addr: string) =>
      new RegExp(
        `another agent registered uuid twins from ${addr.replaceAll('.', '\\.')} at ${iso}.*--pool N`,
      );
    const twin = /another agent/;
    await waitFor(
      () => a.lines.some((l) => twinFrom('127.0.0.2').test(l)) && twinFrom('127.0.0.1').test(bLog),
      90_000,
      "both agents naming the other one's address",
    );
    // Let them trade a few more registrations: the report is not repeated.
    await new Promise((r) => setTimeout(r, 6_000));
    expect(a.lines.filter((l) => twin.test(l))).toHaveLength(1);
    expect(bLog.split('\n').filter((l) => twin.test(l))).toHaveLength(1);
    expect(first.listening).toBe(true);
    expect(second.exitCode).toBe(null);
  }, 150_000);
});
