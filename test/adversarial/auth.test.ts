/**
 * Adversarial: TOTP single use and failure limits, cookie rules, and the registration API's
 * input handling — against `rendezvous dev` in its own process, whose log output is searched
 * for secrets at the end.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { provisionIdentity } from '../../core/registration.js';
import { codeForStep, currentCode, timeStep } from '../../core/totp.js';
import { type DevProcess, startDevProcess, storeOf } from '../support/dev-process.js';
import { dial, rawExchange, readAll } from '../support/net.js';
import { SecretLedger } from '../support/secrets.js';

let dev: DevProcess;
let store: ReturnType<typeof storeOf>;
const ledger = new SecretLedger();

beforeAll(async () => {
  dev = await startDevProcess({ RELAY_PAIR_WAIT_MS: '500' });
  store = storeOf(dev);
});
afterAll(async () => {
  store?.close();
  await dev?.stop();
});

async function provision(uuid: string) {
  const id = await provisionIdentity(store, { uuid });
  ledger.add(id.secret);
  return id;
}

async function put(uuid: string, code: string) {
  ledger.add(code);
  const res = await fetch(`${dev.apiUrl}/?uuid=${encodeURIComponent(uuid)}&response=${code}`, {
    method: 'PUT',
  });
  const body = (await res.json()) as { result?: { cookie: string }; error?: { diagnostic: string } };
  ledger.add(body.result?.cookie.slice(1));
  return { status: res.status, headers: res.headers, body };
}

describe('TOTP', () => {
  it('a code works once: a sequential replay is refused', async () => {
    const id = await provision('adv-replay');
    const code = currentCode(id);
    expect((await put('adv-replay', code)).status).toBe(200);
    expect((await put('adv-replay', code)).status).toBe(401);
  });

  it('20 concurrent PUTs with the same code yield exactly one 200', async () => {
    const id = await provision('adv-race');
    const code = currentCode(id);
    const statuses = await Promise.all(
      Array.from({ length: 20 }, () => put('adv-race', code).then((r) => r.status)),
    );
    expect(statuses.filter((s) => s === 200).length).toBe(1);
    expect(statuses.filter((s) => s === 401).length).toBe(19);
  });

  it('codes one step old or new are accepted, two steps away refused', async () => {
    const id = await provision('adv-window');
    const now = timeStep(id, Date.now());
    expect((await put('adv-window', codeForStep(id, now - 2))).status).toBe(401);
    expect((await put('adv-window', codeForStep(id, now + 2))).status).toBe(401);
    expect((await put('adv-window', codeForStep(id, now - 1))).status).toBe(200);
    expect((await put('adv-window', codeForStep(id, now + 1))).status).toBe(200);
  });

  it('after 10 failures the uuid answers 429 with Retry-After; other uuids are unaffected', async () => {
    const id = await provision('adv-limit');
    const other = await provision('adv-limit-other');
    const good = currentCode(id);
    const wrong = String((Number(good) + 500_000) % 1_000_000).padStart(6, '0');
    for (let i = 0; i < 10; i++) expect((await put('adv-limit', wrong)).status).toBe(401);
    const limited = await put('adv-limit', good);
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(Number(limited.headers.get('retry-after'))).toBeLessThanOrEqual(300);
    expect((await put('adv-limit-other', currentCode(other))).status).toBe(200);
  });
});

describe('cookies', () => {
  it('a cookie past its expiry but still in the table is refused by lookup and relay', async () => {
    await provision('adv-expired');
    const past = Math.floor(Date.now() / 1000) - 10;
    await store.putRegistration({
      uuid: 'adv-expired',
      cookie: 'EXPIREDcookieEXPIREDcookie',
      host: '127.0.0.1',
      port: dev.relayPort,
      registeredAt: past - 100,
      expiresAt: past,
    });
    expect((await fetch(`${dev.apiUrl}/?uuid=adv-expired`)).status).toBe(404);
    expect((await rawExchange(dev.relayPort, 'REXPIREDcookieEXPIREDcookie\n')).text).toBe(
      '-ERR cookie expired, register again\n',
    );
    expect((await rawExchange(dev.relayPort, 'IEXPIREDcookieEXPIREDcookie\n')).text).toBe(
      '-ERR cookie expired, register again\n',
    );
  });

  it("a replaced registration's cookie is refused", async () => {
    const id = await provision('adv-replaced');
    const step = timeStep(id, Date.now());
    const first = (await put('adv-replaced', codeForStep(id, step))).body.result?.cookie as string;
    await put('adv-replaced', codeForStep(id, step + 1));
    expect((await rawExchange(dev.relayPort, `${first}\n`)).text).toBe(
      '-ERR cookie replaced by a newer registration\n',
    );
    expect((await rawExchange(dev.relayPort, `I${first.slice(1)}\n`)).text).toBe(
      '-ERR cookie replaced by a newer registration\n',
    );
  });

  it("cookies of one uuid never pair with another uuid's parked socket", async () => {
    const a = await provision('adv-pair-a');
    const b = await provision('adv-pair-b');
    const ra = (await put('adv-pair-a', currentCode(a))).body.result?.cookie as string;
    const rb = (await put('adv-pair-b', currentCode(b))).body.result?.cookie as string;
    const hiddenB = await dial(dev.relayPort);
    hiddenB.write(`${rb}\n`);
    const sawB = readAll(hiddenB);
    await new Promise((r) => setTimeout(r, 200));
    // A's mobile cookie, with only B parked: no pairing, whatever the wait.
    const r = await rawExchange(dev.relayPort, `I${ra.slice(1)}\nfor-a-only`, 3_000);
    expect(r.text).toBe('-ERR no hidden server parked for this cookie\n');
    hiddenB.end();
    expect((await sawB).toString()).not.toContain('for-a-only');
  });
});

describe('registration API input', () => {
  const bad: Array<[string, string, string]> = [
    ['PUT', '', 'missing parameter: uuid'],
    ['PUT', 'uuid=&response=123456', 'missing parameter: uuid'],
    ['PUT', 'uuid=abc&response=', 'missing parameter: response'],
    ['PUT', `uuid=${'a'.repeat(1025)}&response=123456`, 'parameter too long: uuid'],
    ['PUT', `uuid=abc&response=${'1'.repeat(1025)}`, 'parameter too long: response'],
    ['PUT', 'uuid=ab%00c&response=123456', 'malformed parameter: uuid'],
    ['PUT', 'uuid=ab%0Ac&response=123456', 'malformed parameter: uuid'],
    ['PUT', 'uuid=%C3%A9t%C3%A9&response=123456', 'malformed parameter: uuid'],
    ['PUT', 'uuid=../../etc&response=123456', 'malformed parameter: uuid'],
    ['PUT', 'uuid=abc&response=12ab56', 'malformed parameter: response'],
    ['PUT', 'uuid=abc&response=12345', 'malformed parameter: response'],
    ['PUT', 'uuid=a&uuid=b&response=123456', 'repeated parameter: uuid'],
    ['GET', '', 'missing parameter: uuid'],
    ['GET', 'uuid=%FF%FE', 'malformed parameter: uuid'],
    ['GET', `uuid=${'x'.repeat(5000)}`, 'parameter too long: uuid'],
  ];
  it.each(bad)('%s ?%s → 400 %s', async (method, query, diagnostic) => {
    const res = await fetch(`${dev.apiUrl}/?${query}`, { method });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual({ error: { permanent: true, diagnostic } });
  });

  it('no fuzzed query string yields a 500 or a stack trace', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'PUT', 'POST', 'DELETE'),
        fc.array(
          fc.tuple(
            fc.constantFrom('uuid', 'response', 'x', 'UUID'),
            fc.string({ unit: 'binary', maxLength: 40 }),
          ),
          {
            maxLength: 4,
          },
        ),
        async (method, pairs) => {
          const qs = pairs.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
          const res = await fetch(`${dev.apiUrl}/?${qs}`, { method });
          const text = await res.text();
          expect([400, 401, 404, 405, 429]).toContain(res.status);
          expect(text).not.toMatch(/\n\s+at |Error:/);
          expect(Object.keys(JSON.parse(text))).toEqual(['error']);
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe('logs', () => {
  it('the service logged activity but no TOTP secret, code or cookie', () => {
    const out = dev.output();
    expect(out).toContain('"registered"');
    expect(ledger.size).toBeGreaterThan(10);
    expect(ledger.leakedIn(out)).toEqual([]);
  });
});
