/**
 * The registration API against an embedded store: the R/I cookie split and its migration, and
 * the guess limits (per uuid, per source address) — atomic under concurrency, the same for known
 * and unknown uuids, and never a lockout for the real hidden server.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeForStep, currentCode, timeStep } from '../../core/totp.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { provisionIdentity } from '../../server/identities.js';
import { type RegistrationPolicy, registerHiddenServer } from '../../server/register.js';
import type { Store } from '../../server/store/index.js';
import { apiEvent, resultBody, storeUnavailable, untilEvaluated } from '../support/api-event.js';
import { embeddedStore } from '../support/store.js';

const event = apiEvent;

const body = resultBody;

/** The documented derivation of the mobile (I) cookie from the hidden server's (R) cookie. */
const expectedMobileCookie = (r: string) =>
  createHash('sha256').update(`rendezvous I cookie v1\u0000${r}`).digest('base64url').slice(0, 24);

/** A code that is certainly wrong now (not in the ±1 step window). */
function wrongCode(id: Parameters<typeof currentCode>[0], i = 0): string {
  const step = timeStep(id, Date.now());
  const valid = new Set([-1, 0, 1].map((d) => codeForStep(id, step + d)));
  for (let n = 1000 + i; ; n += 7919) {
    const c = String(n % 1_000_000).padStart(6, '0');
    if (!valid.has(c)) return c;
  }
}

let env: Awaited<ReturnType<typeof embeddedStore>>;
const policy: RegistrationPolicy & { maxFailuresPerSource: number } = {
  relayHost: 'relay.example',
  relayPort: 8899,
  maxFailures: 10,
  maxFailuresPerSource: 5,
  failureWindowSeconds: 300,
};
let register: ReturnType<typeof makeRegisterHandler>;
let lookup: ReturnType<typeof makeLookupHandler>;

beforeAll(async () => {
  env = await embeddedStore();
  register = makeRegisterHandler(() => ({ store: env.store, policy }));
  lookup = makeLookupHandler(() => ({ store: env.store }));
});
afterAll(() => env.close());

const put = (uuid: string, response: string, source?: string) =>
  register(event('PUT', { uuid, response }, source));

describe('regression: the look-up handed out the cookie that parks as the hidden server (issue 12.1)', () => {
  it('R and I cookies differ; I is the one-way derivation of R, and only I is stored', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'split-ok' });
    const r = body(await put('split-ok', currentCode(id))).result.cookie as string;
    const i = body(await lookup(event('GET', { uuid: 'split-ok' }))).result.cookie as string;
    expect(r).toMatch(/^R[A-Za-z0-9_-]{24}$/);
    expect(i).toMatch(/^I[A-Za-z0-9_-]{24}$/);
    expect(i.slice(1)).not.toBe(r.slice(1));
    expect(i.slice(1)).toBe(expectedMobileCookie(r.slice(1)));
    expect((await env.store.resolveCookie(i.slice(1))).uuid).toBe('split-ok');
    // The store never holds the R cookie: it does not resolve, and the registration names only I.
    await expect(env.store.resolveCookie(r.slice(1))).rejects.toThrow();
    expect(JSON.stringify(await env.store.getRegistrationRecord('split-ok'))).not.toContain(r.slice(1));
  });

  it('a registration made before the split (shared cookie) is not handed to mobiles: 404', async () => {
    await provisionIdentity(env.store, { uuid: 'split-legacy' });
    const now = Math.floor(Date.now() / 1000);
    // The shape the old code wrote: one cookie, no scheme marker.
    await env.store.putRegistration({
      uuid: 'split-legacy',
      cookie: 'LEGACYsharedCOOKIEabcdef',
      host: 'relay.example',
      port: 8899,
      registeredAt: now,
      expiresAt: now + 3600,
    });
    const l = await lookup(event('GET', { uuid: 'split-legacy' }));
    expect(l.statusCode).toBe(404);
    expect(body(l).error.diagnostic).toBe('hidden server not registered');
    await expect(env.store.resolveCookie('LEGACYsharedCOOKIEabcdef')).rejects.toThrow();
  });
});

describe('regression: 100 concurrent wrong codes were all evaluated (issue 12.6)', () => {
  it('from 100 sources at once, at most the per-uuid limit are evaluated', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'burst-uuid' });
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, n) => put('burst-uuid', wrongCode(id, n), `10.1.0.${n + 1}`)),
    );
    const evaluated = results.filter((r) => r.statusCode === 401).length;
    const limited = results.filter((r) => r.statusCode === 429).length;
    // A store overloaded by the burst on a busy machine answers 503, which evaluates nothing either.
    const unavailable = results.filter(storeUnavailable).length;
    expect(evaluated + limited + unavailable).toBe(100);
    expect(evaluated).toBeGreaterThan(0);
    expect(evaluated).toBeLessThanOrEqual(policy.maxFailures as number);
    const counter = await env.store.getAttempts('uuid', 'burst-uuid');
    expect(counter?.count ?? 0).toBeLessThanOrEqual(policy.maxFailures as number);
  });

  it('from one source at once, at most the per-source limit are evaluated', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'burst-source' });
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, n) => put('burst-source', wrongCode(id, n), '10.2.0.1')),
    );
    const evaluated = results.filter((r) => r.statusCode === 401).length;
    expect(evaluated).toBeGreaterThan(0);
    expect(evaluated).toBeLessThanOrEqual(policy.maxFailuresPerSource);
    const unavailable = results.filter(storeUnavailable).length;
    expect(results.filter((r) => r.statusCode === 429).length).toBe(100 - evaluated - unavailable);
    const counter = await env.store.getAttempts('source', '10.2.0.1');
    expect(counter?.count ?? 0).toBeLessThanOrEqual(policy.maxFailuresPerSource);
  });
});

describe('regression: only real uuids ever answered 429 (issue 12.7)', () => {
  it('a known and an unknown uuid answer the same statuses and bodies to the same guesses', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'enum-known' });
    const seen: Record<string, string[]> = { 'enum-known': [], 'enum-nobody': [] };
    for (const uuid of Object.keys(seen)) {
      // One guess per source, so only the per-uuid limit can answer 429.
      for (let n = 0; n < 14; n++) {
        // A guess the store timed out on was not evaluated: it is sent again (the same guess).
        const r = await untilEvaluated(() => put(uuid, wrongCode(id, n), `10.3.${uuid.length}.${n + 1}`));
        seen[uuid]?.push(`${r.statusCode} ${r.body}`);
      }
    }
    expect(seen['enum-known']).toEqual(seen['enum-nobody']);
    expect(seen['enum-known']?.filter((s) => s.startsWith('429')).length).toBeGreaterThan(0);
  });
});

describe('regression: anyone who knew a uuid could lock its hidden server out (issue 13)', () => {
  it('an attack gets a handful of guesses per window and the real agent still registers during it', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'lock-victim' });
    const agentSource = '192.0.2.10';
    const step = timeStep(id, Date.now());
    // The agent registered before the attack, from its usual address.
    expect((await put('lock-victim', codeForStep(id, step - 1), agentSource)).statusCode).toBe(200);

    // The attack: 30 guesses from one address, then 5 each from 20 more addresses, all at once.
    const attack = await Promise.all([
      ...Array.from({ length: 30 }, (_, n) => put('lock-victim', wrongCode(id, n), '203.0.113.1')),
      ...Array.from({ length: 100 }, (_, n) =>
        put('lock-victim', wrongCode(id, 100 + n), `203.0.113.${2 + (n % 20)}`),
      ),
    ]);
    const evaluated = attack.filter((r) => r.statusCode === 401).length;
    // A store overloaded by the burst on a busy machine answers 503, which evaluates nothing either.
    expect(attack.every((r) => r.statusCode === 401 || r.statusCode === 429 || storeUnavailable(r))).toBe(
      true,
    );
    expect(evaluated).toBeLessThanOrEqual(policy.maxFailures as number);
    // The uuid is exhausted now: a new address gets 429 without its guess being evaluated.
    expect(
      (await untilEvaluated(() => put('lock-victim', wrongCode(id, 999), '203.0.113.200'))).statusCode,
    ).toBe(429);

    // The real agent, with the right code, during the attack: registered.
    const ok = await put('lock-victim', codeForStep(id, step), agentSource);
    expect(ok.statusCode).toBe(200);
    const l = await lookup(event('GET', { uuid: 'lock-victim' }));
    expect(body(l).result.cookie).toBe(`I${expectedMobileCookie(body(ok).result.cookie.slice(1))}`);
  });

  it('an agent restarted five times within one step (replaying its code) trips no limit', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'lock-restarts' });
    const source = '192.0.2.20';
    const step = timeStep(id, Date.now());
    const code = codeForStep(id, step);
    expect((await put('lock-restarts', code, source)).statusCode).toBe(200);
    for (let i = 0; i < 5; i++) {
      // Each restart replays the same code (refused as a replay, not counted as a guess) ...
      for (let j = 0; j < 3; j++) expect((await put('lock-restarts', code, source)).statusCode).toBe(401);
    }
    // ... and registers with the next step's code.
    expect((await put('lock-restarts', codeForStep(id, step + 1), source)).statusCode).toBe(200);
    expect((await env.store.getAttempts('source', source))?.count ?? 0).toBe(0);
  });
});

describe('a burst of valid codes from one address', () => {
  it('looks again at a per-source budget that valid codes held for a moment, instead of answering 429', async () => {
    const id = await provisionIdentity(env.store, { uuid: 'burst-valid' });
    let refusals = 2;
    // The real store, except that the first two per-source reservations find the budget full,
    // as they do while other valid codes from the same address hold it.
    const busy = new Proxy(env.store, {
      get(target, prop, receiver) {
        if (prop === 'reserveAttempt') {
          return async (...args: Parameters<Store['reserveAttempt']>) => {
            if (args[0] === 'source' && refusals > 0) {
              refusals--;
              return { ok: false, retryAfter: 300 };
            }
            return target.reserveAttempt(...args);
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const triple = await registerHiddenServer(
      busy,
      policy,
      'burst-valid',
      currentCode(id),
      Date.now(),
      '192.0.2.99',
    );
    expect(triple.cookie).toMatch(/^R/);
    expect(refusals).toBe(0);
  });
});
