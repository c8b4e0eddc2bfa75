/**
 * The pool as an application sees it (`listen`'s callback comes once the whole pool is parked)
 * and two agents started for one uuid by mistake: each says so once, with the way to run
 * several connections on purpose (`--pool`), instead of trading refusals forever in silence.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Log } from '../../core/log.js';
import { createHiddenServer, type HiddenServer } from '../../index.js';
import type { LocalStack } from '../../local/stack.js';
import { provision, startStack } from '../support/stack.js';
import { waitFor } from '../support/wait.js';

let stack: LocalStack;
const agents: HiddenServer[] = [];
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  for (const a of agents) a.close();
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
  it('each side reports the other once, naming --pool, and both keep serving', async () => {
    // 2 s steps: each re-registration needs a fresh step, so the fight is quick to see.
    const id = await provision(stack, { uuid: 'twins', params: { step: 2 } });
    const a = keptLog();
    const b = keptLog();
    const first = createHiddenServer({ api: stack.apiUrl, uuid: id.uuid, secret: id.otpauth, log: a.log });
    agents.push(first);
    first.on('error', () => undefined);
    await new Promise<void>((r) => first.listen(() => r()));
    const second = createHiddenServer({ api: stack.apiUrl, uuid: id.uuid, secret: id.otpauth, log: b.log });
    agents.push(second);
    second.on('error', () => undefined);
    second.listen();
    const twin = /another agent .*twins.*--pool/;
    await waitFor(
      () => a.lines.some((l) => twin.test(l)) && b.lines.some((l) => twin.test(l)),
      60_000,
      'both agents reporting the other',
    );
    // Let them trade a few more registrations: the report is not repeated.
    await new Promise((r) => setTimeout(r, 6_000));
    expect(a.lines.filter((l) => twin.test(l))).toHaveLength(1);
    expect(b.lines.filter((l) => twin.test(l))).toHaveLength(1);
    expect(first.listening && second.listening).toBe(true);
  });
});
