/**
 * The relay process (relay/main.ts, as the container runs it): its stdout is one JSON object per
 * line in the shared schema (service "relay"), and with RENDEZVOUS_METRICS=emf it also carries
 * CloudWatch EMF records, flushed once more when it drains on SIGTERM; without it, none.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../support/net.js';
import { embeddedStore } from '../support/store.js';

const MAIN = fileURLToPath(new URL('../../relay/main.ts', import.meta.url));
let store: Awaited<ReturnType<typeof embeddedStore>>;

beforeAll(async () => {
  store = await embeddedStore();
});
afterAll(async () => {
  await store?.close();
});

/** Runs the relay, sends one malformed line, stops it with SIGTERM; resolves to its stdout lines. */
async function runOnce(env: Record<string, string>): Promise<Array<Record<string, unknown>>> {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
    env: {
      ...process.env,
      AWS_ENDPOINT_URL_DYNAMODB: store.endpoint,
      AWS_REGION: 'local',
      AWS_ACCESS_KEY_ID: 'local',
      AWS_SECRET_ACCESS_KEY: 'local',
      RENDEZVOUS_TABLE: store.store.table,
      RELAY_BIND: '127.0.0.1',
      RELAY_PORT: '0',
      RELAY_HTTP_PORT: 'off',
      RELAY_DRAIN_GRACE_MS: '0',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let text = '';
  child.stdout.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + 30_000;
  while (!text.includes('"relay listening"')) {
    if (Date.now() > deadline) throw new Error(`relay did not start: ${text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const listening = JSON.parse(text.split('\n').find((l) => l.includes('"relay listening"')) as string);
  const port = Number(String(listening.generic).split(':').pop());
  expect((await rawExchange(port, 'nonsense\n')).text).toBe('-ERR malformed cookie line\n');
  child.kill('SIGTERM');
  expect(await exit).toBe(0);
  return text
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('the relay process', () => {
  it('RENDEZVOUS_METRICS=emf: EMF records on stdout at the drain, beside schema log lines', async () => {
    const lines = await runOnce({ RENDEZVOUS_METRICS: 'emf', RENDEZVOUS_METRICS_DIMENSION: 'test-stack' });
    const logs = lines.filter((l) => !('_aws' in l));
    const emf = lines.filter((l) => '_aws' in l);
    expect(logs.map((l) => l.msg)).toEqual(['relay listening', 'refused', 'stopping', 'draining', 'drained']);
    for (const l of logs) {
      expect(l.service).toBe('relay');
      expect(String(l.time)).toMatch(/Z$/);
    }
    expect(logs[1]).toMatchObject({
      level: 'WARN',
      event: 'refusal',
      reason: 'malformed_line',
      source: '127.0.0.1',
    });
    // The drain's flush: the refusal by reason and in total, gauges with the Deployment dimension.
    const refusals = emf.filter((d) => 'Refusals' in d);
    expect(refusals).toEqual([
      expect.objectContaining({ Deployment: 'test-stack', Reason: 'malformed_line', Refusals: 1 }),
      expect.objectContaining({ Deployment: 'test-stack', Refusals: 1 }),
    ]);
    expect((refusals[0] as { _aws: { CloudWatchMetrics: unknown[] } })._aws.CloudWatchMetrics).toEqual([
      {
        Namespace: 'Rendezvous',
        Dimensions: [['Deployment', 'Reason']],
        Metrics: [{ Name: 'Refusals', Unit: 'Count' }],
      },
    ]);
    expect(emf.filter((d) => 'ParkedSockets' in d).map((d) => [d.Protocol, d.ParkedSockets])).toEqual([
      ['generic', 0],
      ['http', 0],
      [undefined, 0],
    ]);
    expect(emf.some((d) => d.LiveSplices === 0)).toBe(true);
  }, 60_000);

  it('without RENDEZVOUS_METRICS: no EMF line', async () => {
    const lines = await runOnce({});
    expect(lines.some((l) => '_aws' in l)).toBe(false);
    expect(lines.map((l) => l.msg)).toEqual([
      'relay listening',
      'refused',
      'stopping',
      'draining',
      'drained',
    ]);
  }, 60_000);
});
