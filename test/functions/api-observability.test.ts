/**
 * What the registration API tells its operator (issue 17): one log schema (core/log.ts, service
 * `api`), a record per registration and per refusal naming the reason, the uuid and the source,
 * bounded per reason and source; Registrations, Lookups and ApiRefusals as CloudWatch EMF at the
 * end of each invocation when RENDEZVOUS_METRICS=emf; the store's cause in the log but never on
 * the wire; and never a code, secret or cookie in any record. The handlers run over dynalite.
 */
import { PassThrough } from 'node:stream';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { memoryLog } from '../../core/log.js';
import { codeForStep, currentCode, timeStep } from '../../core/totp.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { apiObservability, apiObservabilityFromEnv, RefusalLogGate } from '../../functions/observe.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { provisionIdentity } from '../../server/identities.js';
import { METRIC } from '../../server/metrics/catalogue.js';
import type { RegistrationPolicy } from '../../server/register.js';
import { Store } from '../../server/store/index.js';
import { apiEvent, resultBody, untilEvaluated } from '../support/api-event.js';
import { embeddedStore } from '../support/store.js';

const event = (method: string, query: Record<string, string> = {}, sourceIp = '192.0.2.1') =>
  apiEvent(method, query, sourceIp);

const body = resultBody;

let env: Awaited<ReturnType<typeof embeddedStore>>;
const policy: RegistrationPolicy = {
  relayHost: 'relay.example',
  relayPort: 8899,
  maxFailures: 3,
  maxFailuresPerSource: 1_000,
  failureWindowSeconds: 60,
};

beforeAll(async () => {
  env = await embeddedStore();
});
afterAll(() => env.close());

/** Lines written to a stream, as JSON, split into EMF documents and log records. */
function capture() {
  const out = new PassThrough();
  let text = '';
  out.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const lines = () =>
    text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return {
    out,
    text: () => text,
    emf: () => lines().filter((l) => '_aws' in l),
    logs: () => lines().filter((l) => !('_aws' in l)),
    reset: () => {
      text = '';
    },
  };
}

/** The EMF document server/metrics/registry.ts writes for one metric value (Timestamp: any number). */
function emfDoc(name: string, value: number, dims: Record<string, string> = {}) {
  return {
    _aws: {
      Timestamp: expect.any(Number),
      CloudWatchMetrics: [
        {
          Namespace: 'Rendezvous',
          Dimensions: [['Deployment', ...Object.keys(dims)]],
          Metrics: [{ Name: name, Unit: 'Count' }],
        },
      ],
    },
    Deployment: 'stack-x',
    ...dims,
    [name]: value,
  };
}

describe('API handlers with RENDEZVOUS_METRICS=emf (the Lambda setup)', () => {
  it('write the exact EMF documents of each invocation, and log records in the one schema, never a secret, code or cookie', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'obs-ok' });
    const c = capture();
    const obs = apiObservabilityFromEnv(
      { RENDEZVOUS_METRICS: 'emf', RENDEZVOUS_METRICS_DIMENSION: 'stack-x' },
      c.out,
    );
    const register = makeRegisterHandler(() => ({ store: env.store, policy }), obs);
    const lookup = makeLookupHandler(() => ({ store: env.store }), obs);
    const step = timeStep(id, Date.now());
    const code = codeForStep(id, step);

    // Registration: 200 with relayOptions; one Registrations document; one record.
    const ok = await register(event('PUT', { uuid: 'obs-ok', response: code }, '198.51.100.7'));
    expect(ok.statusCode).toBe(200);
    const triple = body(ok).result;
    expect(triple).toEqual({
      host: 'relay.example',
      port: 8899,
      cookie: expect.stringMatching(/^R/),
      relayOptions: ['rid', 'target', 'direct'],
    });
    expect(c.emf()).toEqual([emfDoc('Registrations', 1)]);
    expect(c.logs()).toEqual([
      {
        time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
        level: 'INFO',
        service: 'api',
        msg: 'registered',
        event: 'registration',
        uuid: 'obs-ok',
        source: '198.51.100.7',
      },
    ]);
    const all: string[] = [c.text()];
    c.reset();

    // The same code again (replay): 401, ApiRefusals with and without its Reason dimension.
    const replay = await register(event('PUT', { uuid: 'obs-ok', response: code }, '203.0.113.9'));
    expect(replay.statusCode).toBe(401);
    expect(c.emf()).toEqual([emfDoc('ApiRefusals', 1, { Reason: 'auth_failed' }), emfDoc('ApiRefusals', 1)]);
    expect(c.logs()).toEqual([
      expect.objectContaining({
        level: 'WARN',
        service: 'api',
        msg: 'refused',
        event: 'refusal',
        protocol: 'api',
        reason: 'auth_failed',
        op: 'register',
        method: 'PUT',
        uuid: 'obs-ok',
        source: '203.0.113.9',
        status: 401,
      }),
    ]);
    all.push(c.text());
    c.reset();

    // A look-up found: Lookups{Outcome=found} and its total; no record (the volume is the clients').
    const found = await lookup(event('GET', { uuid: 'obs-ok' }, '198.51.100.8'));
    expect(body(found).result).toEqual({
      host: 'relay.example',
      port: 8899,
      cookie: expect.stringMatching(/^I/),
      relayOptions: ['rid', 'target', 'direct'],
    });
    expect(c.emf()).toEqual([emfDoc('Lookups', 1, { Outcome: 'found' }), emfDoc('Lookups', 1)]);
    expect(c.logs()).toEqual([]);
    all.push(c.text());
    c.reset();

    // Not registered: Lookups{not_found} and ApiRefusals{not_registered}.
    const missing = await lookup(event('GET', { uuid: 'obs-nobody' }, '198.51.100.8'));
    expect(missing.statusCode).toBe(404);
    expect(c.emf()).toEqual([
      emfDoc('Lookups', 1, { Outcome: 'not_found' }),
      emfDoc('Lookups', 1),
      emfDoc('ApiRefusals', 1, { Reason: 'not_registered' }),
      emfDoc('ApiRefusals', 1),
    ]);
    expect(c.logs()).toEqual([
      expect.objectContaining({ level: 'INFO', reason: 'not_registered', uuid: 'obs-nobody', status: 404 }),
    ]);
    all.push(c.text());
    c.reset();

    // Each other reason in turn: one invocation, one count, one record with the reason.
    const cases: Array<[APIGatewayProxyEventV2, 'register' | 'lookup', string, number, string | undefined]> =
      [
        [event('PUT', { uuid: 'obs-ok' }), 'register', 'missing_parameter', 400, 'obs-ok'],
        [
          event('PUT', { uuid: 'obs-ok', response: '12ab' }),
          'register',
          'malformed_parameter',
          400,
          'obs-ok',
        ],
        [event('GET', { uuid: 'no spaces allowed' }), 'lookup', 'malformed_parameter', 400, undefined],
        [event('POST', { uuid: 'obs-ok' }), 'register', 'wrong_method', 405, 'obs-ok'],
        [event('DELETE', { uuid: 'obs-ok' }), 'lookup', 'wrong_method', 405, 'obs-ok'],
      ];
    for (const [ev, which, reason, status, uuid] of cases) {
      const r = await (which === 'register' ? register : lookup)(ev);
      expect(r.statusCode, reason).toBe(status);
      expect(c.emf(), reason).toEqual([
        emfDoc('ApiRefusals', 1, { Reason: reason }),
        emfDoc('ApiRefusals', 1),
      ]);
      const [record] = c.logs();
      expect(record, reason).toMatchObject({ event: 'refusal', reason, status, source: '192.0.2.1' });
      expect(record?.uuid, reason).toBe(uuid);
      all.push(c.text());
      c.reset();
    }

    const text = all.join('');
    expect(text).not.toContain(id.secret);
    expect(text).not.toContain(code);
    expect(text).not.toContain(triple.cookie.slice(1));
    expect(text).not.toContain('12ab');
  });

  it('too_many_attempts is counted and logged with the uuid and the source', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'obs-locked' });
    const log = memoryLog('api');
    const obs = apiObservability({ log });
    const register = makeRegisterHandler(() => ({ store: env.store, policy }), obs);
    const wrong = String((Number(currentCode(id)) + 1) % 1_000_000).padStart(6, '0');
    const statuses: number[] = [];
    // A guess the store timed out on (a busy machine) was not evaluated: it is sent again.
    for (let i = 0; i < 5; i++)
      statuses.push(
        (
          await untilEvaluated(() =>
            register(event('PUT', { uuid: 'obs-locked', response: wrong }, '203.0.113.50')),
          )
        ).statusCode ?? 0,
      );
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    expect(obs.metrics.value(METRIC.apiRefusals, { reason: 'too_many_attempts' })).toBe(2);
    expect(log.records.filter((r) => r.reason === 'too_many_attempts')).toEqual([
      expect.objectContaining({ level: 'WARN', uuid: 'obs-locked', source: '203.0.113.50', status: 429 }),
      expect.objectContaining({ level: 'WARN', uuid: 'obs-locked', source: '203.0.113.50', status: 429 }),
    ]);
  });

  it('without RENDEZVOUS_METRICS nothing but log records is written', async () => {
    const c = capture();
    const lookup = makeLookupHandler(() => ({ store: env.store }), apiObservabilityFromEnv({}, c.out));
    await lookup(event('GET', { uuid: 'obs-nobody' }));
    await lookup(event('GET', { uuid: 'obs-nobody' }));
    expect(c.emf()).toEqual([]);
    expect(c.logs()).toHaveLength(2);
  });
});

describe('store failures', () => {
  it('the client gets the generic 503; the log names the cause; a dead home replica is home_unreachable', async () => {
    const dead = new Store({ table: 't', endpoint: 'http://127.0.0.1:9', region: 'local' });
    const log = memoryLog('api');
    const obs = apiObservability({ log });
    try {
      await provisionIdentity(env.store, { uuid: 'obs-home' });
      const down = await makeRegisterHandler(
        () => ({ store: dead, policy }),
        obs,
      )(event('PUT', { uuid: 'obs-home', response: '123456' }));
      const homeDown = await makeRegisterHandler(
        () => ({ store: env.store, policy, home: dead }),
        obs,
      )(event('PUT', { uuid: 'obs-home', response: '123456' }));
      const lookDown = await makeLookupHandler(
        () => ({ store: dead }),
        obs,
      )(event('GET', { uuid: 'obs-home' }));
      for (const r of [down, homeDown, lookDown]) {
        expect(r.statusCode).toBe(503);
        expect(body(r)).toEqual({
          error: { permanent: false, diagnostic: 'store unavailable, try again later' },
        });
        expect(r.body).not.toContain('127.0.0.1');
      }
      const cause = 'store: cannot connect to http://127.0.0.1:9: ECONNREFUSED';
      expect(log.records.map((r) => [r.level, r.reason, r.op, r.cause])).toEqual([
        ['WARN', 'store_unavailable', 'register', cause],
        ['WARN', 'home_unreachable', 'register', cause],
        ['WARN', 'store_unavailable', 'lookup', cause],
      ]);
    } finally {
      dead.close();
    }
  });
});

describe('a flood of refusals cannot fill the log', () => {
  it('records per reason and source, then per reason, are bounded; metrics count every one; the next window says how many were dropped', async () => {
    let now = 1_000_000;
    const log = memoryLog('api');
    const obs = apiObservability({ log, gate: new RefusalLogGate(20, 100, () => now) });
    const lookup = makeLookupHandler(() => ({ store: env.store }), obs);
    // One address, 500 wrong methods: 20 records.
    for (let i = 0; i < 500; i++) await lookup(event('POST', {}, '203.0.113.66'));
    expect(log.records).toHaveLength(20);
    // Another address during that flood is still seen.
    await lookup(event('POST', {}, '198.51.100.1'));
    expect(log.records.at(-1)).toMatchObject({ reason: 'wrong_method', source: '198.51.100.1' });
    // A flood spread over 500 addresses: the reason's budget (100 a minute) holds.
    for (let i = 0; i < 500; i++) await lookup(event('POST', {}, `10.9.${i >> 8}.${i & 255}`));
    expect(log.records).toHaveLength(100);
    expect(obs.metrics.value(METRIC.apiRefusals, { reason: 'wrong_method' })).toBe(1_001);
    // A minute later the first record of the noisy source says how many of its kind were dropped.
    now += 60_000;
    await lookup(event('POST', {}, '203.0.113.66'));
    const next = log.records.at(-1);
    expect(next).toMatchObject({ source: '203.0.113.66' });
    // Its own 480, plus what the reason's budget dropped from everyone (421 of the 500 spread).
    expect(next?.suppressed).toBe(480 + 421);
  });
});

describe('the real Lambda entry points', () => {
  it('read RENDEZVOUS_METRICS and RENDEZVOUS_METRICS_DIMENSION and write EMF and records to stdout', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, {
      AWS_ENDPOINT_URL_DYNAMODB: env.endpoint,
      AWS_REGION: 'local',
      RENDEZVOUS_TABLE: env.store.table,
      RELAY_PUBLIC_HOST: 'relay.example',
      RENDEZVOUS_METRICS: 'emf',
      RENDEZVOUS_METRICS_DIMENSION: 'stack-x',
    });
    const lines: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    try {
      vi.resetModules();
      const { handler } = await import('../../functions/lookup.js');
      const r = await handler(event('GET', { uuid: 'lambda-nobody' }, '198.51.100.99'));
      expect(r.statusCode).toBe(404);
    } finally {
      spy.mockRestore();
      process.env = saved;
    }
    const docs = lines
      .join('')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    expect(docs.filter((d) => '_aws' in d)).toEqual([
      emfDoc('Lookups', 1, { Outcome: 'not_found' }),
      emfDoc('Lookups', 1),
      emfDoc('ApiRefusals', 1, { Reason: 'not_registered' }),
      emfDoc('ApiRefusals', 1),
    ]);
    expect(docs.filter((d) => !('_aws' in d))).toEqual([
      expect.objectContaining({
        service: 'api',
        event: 'refusal',
        reason: 'not_registered',
        uuid: 'lambda-nobody',
        source: '198.51.100.99',
      }),
    ]);
  });
});
