import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRendezvousError } from '../../core/errors.js';
import { memoryLog } from '../../core/log.js';
import { codeForStep, currentCode, timeStep } from '../../core/totp.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { apiObservability } from '../../functions/observe.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import type { RegistrationPolicy } from '../../server/register.js';
import { Store } from '../../server/store/index.js';
import { apiEvent, resultBody, untilEvaluated } from '../support/api-event.js';
import { embeddedStore } from '../support/store.js';

const event = apiEvent;

const body = resultBody;

let env: Awaited<ReturnType<typeof embeddedStore>>;
const policy: RegistrationPolicy = {
  relayHost: 'relay.example',
  relayPort: 8899,
  maxFailures: 3,
  // Per-source limits have their own tests (guess-limits.test.ts); here every request shares one address.
  maxFailuresPerSource: 1_000,
  failureWindowSeconds: 60,
};
let register: ReturnType<typeof makeRegisterHandler>;
let lookup: ReturnType<typeof makeLookupHandler>;

beforeAll(async () => {
  env = await embeddedStore();
  register = makeRegisterHandler(() => ({ store: env.store, policy }));
  lookup = makeLookupHandler(() => ({ store: env.store }));
});
afterAll(() => env.close());

describe('register (PUT) and lookup (GET)', () => {
  it('registers with a valid code and answers lookups with the derived mobile cookie, I-prefixed', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'hs-ok' });
    const r = await register(event('PUT', { uuid: 'hs-ok', response: currentCode(id) }));
    expect(r.statusCode).toBe(200);
    const triple = body(r).result;
    expect(triple).toMatchObject({ host: 'relay.example', port: 8899 });
    expect(triple.cookie).toMatch(/^R[A-Za-z0-9_-]{22,}$/);
    const l = await lookup(event('GET', { uuid: 'hs-ok' }));
    expect(l.statusCode).toBe(200);
    expect(body(l)).toEqual({
      result: {
        host: 'relay.example',
        port: 8899,
        cookie: `I${mobileCookieFor(triple.cookie.slice(1))}`,
        relayOptions: ['rid', 'target', 'direct'],
      },
    });
    expect(l.headers?.['content-type']).toBe('application/json');
  });

  it('answers a wrong code and an unknown uuid with the same 401 body', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'hs-wrong' });
    const good = currentCode(id);
    const wrong = String((Number(good) + 1) % 1_000_000).padStart(6, '0');
    const a = await register(event('PUT', { uuid: 'hs-wrong', response: wrong }));
    const b = await register(event('PUT', { uuid: 'nobody-here', response: good }));
    expect(a.statusCode).toBe(401);
    expect(b.statusCode).toBe(401);
    expect(a.body).toBe(b.body);
    expect(body(a)).toEqual({ error: { permanent: true, diagnostic: 'authentication failed' } });
  });

  it('refuses a replayed code with 401', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'hs-replay' });
    const code = currentCode(id);
    expect((await register(event('PUT', { uuid: 'hs-replay', response: code }))).statusCode).toBe(200);
    const again = await register(event('PUT', { uuid: 'hs-replay', response: code }));
    expect(again.statusCode).toBe(401);
    expect(body(again).error.diagnostic).toBe('authentication failed');
  });

  it("accepts the next step's code after this step's (drift window), then refuses older ones", async () => {
    const id = await provisionIdentity(env.store, { uuid: 'hs-steps' });
    const step = timeStep(id, Date.now());
    expect(
      (await register(event('PUT', { uuid: 'hs-steps', response: codeForStep(id, step) }))).statusCode,
    ).toBe(200);
    expect(
      (await register(event('PUT', { uuid: 'hs-steps', response: codeForStep(id, step + 1) }))).statusCode,
    ).toBe(200);
    expect(
      (await register(event('PUT', { uuid: 'hs-steps', response: codeForStep(id, step - 1) }))).statusCode,
    ).toBe(401);
  });

  it('400s on missing or malformed parameters with the JSON error body', async () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{}, 'missing parameter: uuid'],
      [{ response: '123456' }, 'missing parameter: uuid'],
      [{ uuid: 'hs-x' }, 'missing parameter: response'],
      [{ uuid: 'hs-x', response: 'abc' }, 'malformed parameter: response'],
      [{ uuid: 'bad uuid/../', response: '123456' }, 'malformed parameter: uuid'],
      [{ uuid: 'x'.repeat(2000), response: '123456' }, 'parameter too long: uuid'],
      [{ uuid: 'a,b', response: '123456' }, 'repeated parameter: uuid'],
    ];
    for (const [q, diagnostic] of cases) {
      const r = await register(event('PUT', q));
      expect(r.statusCode, JSON.stringify(q)).toBe(400);
      expect(body(r)).toEqual({ error: { permanent: true, diagnostic } });
    }
    const l = await lookup(event('GET', {}));
    expect(l.statusCode).toBe(400);
    expect(body(l).error.diagnostic).toBe('missing parameter: uuid');
  });

  it('405s a wrong method with Allow', async () => {
    for (const r of [
      await register(event('GET', { uuid: 'a' })),
      await lookup(event('DELETE', { uuid: 'a' })),
    ]) {
      expect(r.statusCode).toBe(405);
      expect(r.headers?.allow).toBe('GET, PUT');
      expect(body(r).error.diagnostic).toBe('method not allowed');
    }
  });

  it('404s a lookup of an unregistered uuid, temporary', async () => {
    await provisionIdentity(env.store, { uuid: 'hs-never' });
    const r = await lookup(event('GET', { uuid: 'hs-never' }));
    expect(r.statusCode).toBe(404);
    expect(body(r)).toEqual({ error: { permanent: false, diagnostic: 'hidden server not registered' } });
  });

  it('429s with Retry-After after too many failures, for that uuid only', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'hs-limit' });
    const other = await provisionIdentity(env.store, { uuid: 'hs-limit-other' });
    // A guess the store timed out on (a busy machine) was not evaluated: it is sent again.
    const guess = (response: string) =>
      untilEvaluated(() => register(event('PUT', { uuid: 'hs-limit', response })));
    for (let i = 0; i < 3; i++) {
      expect((await guess('000000')).statusCode).toBe(401);
    }
    const r = await guess(currentCode(id));
    expect(r.statusCode).toBe(429);
    expect(Number(r.headers?.['retry-after'])).toBeGreaterThan(0);
    expect(body(r).error.permanent).toBe(false);
    expect(
      (await register(event('PUT', { uuid: 'hs-limit-other', response: currentCode(other) }))).statusCode,
    ).toBe(200);
  });

  it('replaces the cookie on a new registration: the old one no longer resolves', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'hs-replace' });
    const step = timeStep(id, Date.now());
    const first = body(
      await register(event('PUT', { uuid: 'hs-replace', response: codeForStep(id, step) })),
    ).result;
    const second = body(
      await register(event('PUT', { uuid: 'hs-replace', response: codeForStep(id, step + 1) })),
    ).result;
    expect(second.cookie).not.toBe(first.cookie);
    await expect(env.store.resolveCookie(mobileCookieFor(first.cookie.slice(1)))).rejects.toSatisfy(
      (e) => isRendezvousError(e) && (e.code === 'COOKIE_UNKNOWN' || e.code === 'COOKIE_REPLACED'),
    );
    expect((await env.store.resolveCookie(mobileCookieFor(second.cookie.slice(1)))).uuid).toBe('hs-replace');
  });

  it('refuses a cookie past its expiry even while it is still in the table', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'hs-expiry' });
    const cookie = mobileCookieFor(
      body(
        await register(event('PUT', { uuid: 'hs-expiry', response: currentCode(id) })),
      ).result.cookie.slice(1),
    );
    const later = Date.now() + 2 * 24 * 3600 * 1000;
    await expect(env.store.resolveCookie(cookie, later)).rejects.toSatisfy((e) =>
      isRendezvousError(e, 'COOKIE_EXPIRED'),
    );
    await expect(env.store.getRegistration('hs-expiry', later)).resolves.toBeUndefined();
  });

  it('answers 503 with Retry-After when the store is down, never a stack trace', async () => {
    const dead = new Store({ table: 't', endpoint: 'http://127.0.0.1:9', region: 'local' });
    try {
      const r = await makeRegisterHandler(() => ({ store: dead, policy }))(
        event('PUT', { uuid: 'a', response: '123456' }),
      );
      expect(r.statusCode).toBe(503);
      expect(r.headers?.['retry-after']).toBe('5');
      expect(body(r)).toEqual({
        error: { permanent: false, diagnostic: 'store unavailable, try again later' },
      });
      const l = await makeLookupHandler(() => ({ store: dead }))(event('GET', { uuid: 'a' }));
      expect(l.statusCode).toBe(503);
    } finally {
      dead.close();
    }
  });
});

describe('regression: a frozen store hung every request (the SDK only warned on requestTimeout)', () => {
  it('a store that accepts connections and never answers gives 503 within seconds', async () => {
    const { createServer } = await import('node:net');
    const frozen = createServer(() => {});
    await new Promise<void>((r) => frozen.listen(0, '127.0.0.1', r));
    const port = (frozen.address() as { port: number }).port;
    const stuck = new Store({ table: 't', endpoint: `http://127.0.0.1:${port}`, region: 'local' });
    const started = Date.now();
    try {
      const r = await makeLookupHandler(() => ({ store: stuck }))(event('GET', { uuid: 'a' }));
      expect(r.statusCode).toBe(503);
      expect(r.headers?.['retry-after']).toBeDefined();
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      stuck.close();
      frozen.close();
    }
  }, 20_000);
});

describe('logs', () => {
  it('name the uuid, the source and the outcome but never the secret, the code or the cookie', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'hs-logs' });
    const log = memoryLog('api');
    const obs = apiObservability({ log });
    const reg = makeRegisterHandler(() => ({ store: env.store, policy }), obs);
    const look = makeLookupHandler(() => ({ store: env.store }), obs);
    const code = currentCode(id);
    const ok = await reg(event('PUT', { uuid: 'hs-logs', response: code }, '198.51.100.4'));
    const cookie = body(ok).result.cookie.slice(1);
    await reg(event('PUT', { uuid: 'hs-logs', response: code }, '198.51.100.4'));
    await look(event('GET', { uuid: 'hs-logs' }, '198.51.100.5'));
    expect(log.records.map(({ time: _t, ...r }) => r)).toEqual([
      {
        level: 'INFO',
        service: 'api',
        msg: 'registered',
        event: 'registration',
        uuid: 'hs-logs',
        source: '198.51.100.4',
      },
      {
        level: 'WARN',
        service: 'api',
        msg: 'refused',
        event: 'refusal',
        protocol: 'api',
        reason: 'auth_failed',
        op: 'register',
        method: 'PUT',
        uuid: 'hs-logs',
        source: '198.51.100.4',
        status: 401,
      },
    ]);
    const text = JSON.stringify(log.records);
    expect(text).not.toContain(id.secret);
    expect(text).not.toContain(code);
    expect(text).not.toContain(cookie);
  });
});
