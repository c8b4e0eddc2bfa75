/**
 * Our agent against servers that behave as the original node-rendezvous servers do
 * (test/support/original-servers.ts, from the observed facts): an operator moving in stages runs
 * our agent against the original's API and relays, with identities the original minted.
 */
import { createServer as createWebServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Log } from '../../core/log.js';
import { createHiddenServer, exposeHiddenServer, type HiddenServer } from '../../index.js';
import { binarySecret, originalAsciiSecret, originalCode, stepAt } from '../compat/original-model.js';
import { spawnCli, waitForOutput } from '../support/cli.js';
import { type OriginalStack, startOriginalStack } from '../support/original-servers.js';
import { waitFor } from '../support/wait.js';

const ascii = { uuid: 'orig-ascii', base32: originalAsciiSecret() };
const binary = { uuid: 'orig-binary', base32: binarySecret() };
const pooled = { uuid: 'orig-pool', base32: originalAsciiSecret() };
let stack: OriginalStack;
let web: Server;
const agents: HiddenServer[] = [];

beforeAll(async () => {
  stack = await startOriginalStack([ascii, binary, pooled]);
  web = createWebServer((req, res) => res.end(`hello ${req.url}`));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
});
afterAll(() => {
  for (const a of agents) a.close();
  stack?.close();
  web?.close();
});

/** A log whose lines are kept, to count warnings. */
function keptLog(): { lines: string[]; log: Log } {
  const lines: string[] = [];
  const line = (level: string) => (msg: string, fields?: object) =>
    void lines.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`);
  return { lines, log: { info: line('INFO'), warn: line('WARN'), error: line('ERROR') } };
}

/** A GET through the original's HTTP relay, named by Basic credentials: the status and body. */
function getThrough(uuid: string, path: string): Promise<{ status: number; body: string }> {
  const url = new URL(stack.httpUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, path, auth: `${uuid}:x`, agent: false },
      (res) => {
        let body = '';
        res.on('data', (c) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('no answer')));
    req.end();
  });
}

describe('our agent against the original servers', () => {
  it('HTTP protocol: re-parks with the current code at once after a rendezvous, within the step', async () => {
    // Start well inside a step, so two requests a moment apart fall in the same one.
    const msLeft = () => 30_000 - (Date.now() % 30_000);
    if (msLeft() < 15_000) await new Promise((r) => setTimeout(r, msLeft() + 200));
    const step = stepAt(Date.now());
    const agent = exposeHiddenServer({
      protocol: 'http',
      relay: stack.httpUrl,
      uuid: ascii.uuid,
      secret: ascii.base32,
      target: { host: '127.0.0.1', port: (web.address() as AddressInfo).port },
      probeEveryMs: 0,
    });
    agents.push(agent);
    agent.on('error', () => undefined);
    await waitFor(() => stack.connects.accepted >= 1, 10_000, 'first CONNECT accepted');
    expect(await getThrough(ascii.uuid, '/one')).toEqual({ status: 200, body: 'hello /one' });
    // The next request a moment later finds the agent parked again, in the same step.
    await waitFor(() => stack.connects.accepted >= 2, 5_000, `re-park (${stack.connects.refused} refused)`);
    expect(await getThrough(ascii.uuid, '/two')).toEqual({ status: 200, body: 'hello /two' });
    expect(stepAt(Date.now())).toBe(step);
    agent.close();
  });

  it('a relay that keeps one parked socket per cookie: the pool is reduced to 1 with one warning', async () => {
    const { lines, log } = keptLog();
    const agent = createHiddenServer(
      { api: stack.apiUrl, uuid: pooled.uuid, secret: pooled.base32, pool: 2, log },
      (s) => s.end('hi'),
    );
    agents.push(agent);
    agent.on('error', () => undefined);
    agent.listen();
    await waitFor(
      () => lines.some((l) => /one parked connection per registration/.test(l)),
      15_000,
      `the pool warning (${stack.parks()} parks so far)`,
    );
    // No churn afterwards: the one slot left stays parked.
    const parks = stack.parks();
    await new Promise((r) => setTimeout(r, 2_000));
    expect(stack.parks() - parks).toBeLessThanOrEqual(1);
    expect(stack.parkedNow()).toBe(1);
    expect(lines.filter((l) => /one parked connection per registration/.test(l))).toHaveLength(1);
    agent.close();
  });

  it('a binary secret authenticates with speakeasy-style codes (codeEncoding), 8 digits when asked', async () => {
    // The original's own client for this secret: its code differs from RFC 6238's.
    const agent = createHiddenServer({
      api: stack.apiUrl,
      uuid: binary.uuid,
      secret: binary.base32,
      codeEncoding: 'speakeasy',
      codeDigits: 8,
      auth: 'code',
    } as Parameters<typeof createHiddenServer>[0]);
    agents.push(agent);
    const failed = new Promise<Error>((r) => agent.once('error', r));
    const registered = new Promise<void>((r) => agent.once('registered', () => r()));
    agent.listen();
    const first = await Promise.race([registered.then(() => undefined), failed]);
    expect(first).toBeUndefined();
    const sent = stack.responses.at(-1) as string;
    expect(sent).toHaveLength(8);
    expect(sent).toBe(originalCode(binary.base32, stepAt(Date.now()), 8));
    agent.close();
  });

  it('the CLI: expose --code-encoding speakeasy --code-digits 8 registers a binary secret', async () => {
    const child = spawnCli(
      ['expose', '--uuid', binary.uuid, '--to', '1', '--api', stack.apiUrl, '--probe-every', '0'].concat([
        '--code-encoding',
        'speakeasy',
        '--code-digits',
        '8',
      ]),
      { RENDEZVOUS_SECRET: binary.base32 },
    );
    try {
      await waitForOutput(child, /registered/, 30_000, 'stderr');
      expect(stack.responses.at(-1)).toHaveLength(8);
    } finally {
      child.kill();
    }
  });

  it('an otpauth URI with encoding=speakeasy and digits=40 (the original full value) authenticates', async () => {
    const uri = `otpauth://totp/x?secret=${binary.base32}&digits=40&period=30&encoding=speakeasy`;
    const agent = createHiddenServer({ api: stack.apiUrl, uuid: binary.uuid, secret: uri });
    agents.push(agent);
    const failed = new Promise<Error>((r) => agent.once('error', r));
    const registered = new Promise<void>((r) => agent.once('registered', () => r()));
    agent.listen();
    expect(await Promise.race([registered.then(() => undefined), failed])).toBeUndefined();
    expect(stack.responses.at(-1)).toBe(originalCode(binary.base32, stepAt(Date.now())));
    agent.close();
  });
});
