/**
 * The registration API's code rule (issues 25 and 26): compat identities take any length the
 * original took and answer refusals the original's way; what the server can prove to the holder
 * of a right code (disabled, length refused) is said; a settings change ends a lockout at once;
 * one-time proofs register whatever strangers have guessed, and never touch a guess budget.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importIdentities } from '../../cli/import/import.js';
import { currentCode, ORIGINAL_COMPAT, proofForStep, timeStep } from '../../core/totp.js';
import { makeRegisterHandler } from '../../functions/register.js';
import {
  provisionIdentity,
  rotateIdentitySecret,
  setIdentityCompat,
  setIdentityDisabled,
} from '../../server/identities.js';
import { type RegistrationPolicy, registerHiddenServer } from '../../server/register.js';
import { originalAsciiSecret, originalCode, originalRecord, stepAt } from '../compat/original-model.js';
import { apiEvent, resultBody } from '../support/api-event.js';
import { embeddedStore } from '../support/store.js';

let env: Awaited<ReturnType<typeof embeddedStore>>;
const policy: RegistrationPolicy = {
  relayHost: 'relay.example',
  relayPort: 8899,
  maxFailures: 10,
  maxFailuresPerSource: 5,
  failureWindowSeconds: 300,
};
let register: ReturnType<typeof makeRegisterHandler>;

beforeAll(async () => {
  env = await embeddedStore();
  register = makeRegisterHandler(() => ({ store: env.store, policy }));
});
afterAll(() => env.close());

const put = async (uuid: string, response: string, source = '10.1.0.1') => {
  const r = await register(apiEvent('PUT', { uuid, response }, source));
  return { status: r.statusCode as number, body: resultBody(r) };
};

/** Waits until the current step has at least `ms` left. */
async function roomInStep(ms: number) {
  const left = 30_000 - (Date.now() % 30_000);
  if (left < ms) await new Promise((r) => setTimeout(r, left + 50));
}

/** A compat identity (the original's settings) with an ASCII secret whose value now has 9–10 digits. */
async function compatIdentity(uuid: string, compat = ORIGINAL_COMPAT) {
  await roomInStep(10_000);
  let secret = originalAsciiSecret();
  while (originalCode(secret, stepAt(Date.now())).length < 9) secret = originalAsciiSecret();
  await provisionIdentity(env.store, { uuid, secret, compat });
  return { uuid, secret, code: (length = 40) => originalCode(secret, stepAt(Date.now()), length) };
}

/** A code of `length` digits that is not the identity's now. */
const wrong = (right: string) => right.replace(/.$/, (d) => String((Number(d) + 1) % 10));

const ORIGINAL_REFUSAL = { error: { permanent: false, diagnostic: 'invalid request' } };

describe('compat identities: the original`s code rule and answers', () => {
  it('a wrong code and a malformed one answer 200 {"error":{"permanent":false,"diagnostic":"invalid request"}}', async () => {
    const id = await compatIdentity('rule-shape');
    for (const response of [wrong(id.code(6)), wrong(id.code()), '12345', 'abcdef', '1'.repeat(20)]) {
      expect(await put(id.uuid, response)).toEqual({ status: 200, body: ORIGINAL_REFUSAL });
    }
    // A strict identity and an unknown uuid keep today's answers.
    const strict = await provisionIdentity(env.store, { uuid: 'rule-shape-strict' });
    expect((await put(strict.uuid, wrong(currentCode(strict)), '10.1.0.2')).status).toBe(401);
    expect((await put('rule-shape-nobody', '123456', '10.1.0.2')).status).toBe(401);
    expect((await put(strict.uuid, 'abcdef', '10.1.0.2')).status).toBe(400);
  });

  it('the shortest accepted length (compat digits 8): a right 6-digit code gets 400 CODE_LENGTH_REFUSED, the whole value registers', async () => {
    const id = await compatIdentity('rule-min8', { ...ORIGINAL_COMPAT, digits: 8 });
    const refused = await put(id.uuid, id.code(6), '10.2.0.1');
    expect(refused.status).toBe(400);
    expect(refused.body.error.diagnostic).toBe('code length not accepted for this identity');
    expect((await put(id.uuid, id.code(8), '10.2.0.1')).status).toBe(200);
    expect((await put(id.uuid, id.code(), '10.2.0.1')).status).toBe(200);
  });

  it('under attack, a length the identity never used is refused (to a right code only); used ones still register', async () => {
    const id = await compatIdentity('rule-attack');
    expect((await put(id.uuid, id.code(), '10.3.0.1')).status).toBe(200);
    // A stranger spends part of the uuid's budget.
    for (let i = 0; i < 3; i++) await put(id.uuid, wrong(id.code(6)), `10.3.1.${i}`);
    const six = await put(id.uuid, id.code(6), '10.3.2.1');
    expect(six.status).toBe(400);
    expect(six.body.error).toMatchObject({
      permanent: false,
      diagnostic: 'code length not accepted for this identity',
    });
    // A wrong 6-digit code is no different from any wrong code.
    expect(await put(id.uuid, wrong(id.code(6)), '10.3.2.2')).toEqual({
      status: 200,
      body: ORIGINAL_REFUSAL,
    });
    expect((await put(id.uuid, id.code(), '10.3.2.3')).status).toBe(200);
  });

  it('a steady attacker spans windows: the first guess of a new window still finds the uuid under attack', async () => {
    const secret = originalAsciiSecret();
    await provisionIdentity(env.store, { uuid: 'rule-steady', secret, compat: ORIGINAL_COMPAT });
    // A fake clock: a step whose value has 10 digits, and one six minutes (a window and more) later.
    let step = 59_000_000;
    while (originalCode(secret, step).length < 10 || originalCode(secret, step + 12).length < 10) step++;
    const at = (s: number) => s * 30_000 + 1_000;
    const reg = (code: string, s: number, src: string) =>
      registerHiddenServer(env.store, policy, 'rule-steady', code, at(s), src);
    await reg(originalCode(secret, step), step, '10.9.0.1');
    await expect(reg(wrong(originalCode(secret, step, 6)), step, '10.9.1.1')).rejects.toMatchObject({
      code: 'AUTH_FAILED',
    });
    // The next window: the stranger's guess stood in the one before, so a 6-digit code (never
    // used by this identity's clients) is still refused; the whole value registers.
    await expect(reg(originalCode(secret, step + 12, 6), step + 12, '10.9.1.2')).rejects.toMatchObject({
      code: 'CODE_LENGTH_REFUSED',
      permanent: false,
    });
    await reg(originalCode(secret, step + 12), step + 12, '10.9.0.1');
  });

  it('a right code for a disabled identity gets 403 identity disabled; a wrong one the usual refusal', async () => {
    const id = await compatIdentity('rule-disabled');
    await setIdentityDisabled(env.store, id.uuid, true);
    expect(await put(id.uuid, id.code(), '10.4.0.1')).toEqual({
      status: 403,
      body: { error: { permanent: true, diagnostic: 'identity disabled' } },
    });
    expect(await put(id.uuid, wrong(id.code()), '10.4.0.1')).toEqual({ status: 200, body: ORIGINAL_REFUSAL });
    const strict = await provisionIdentity(env.store, { uuid: 'rule-disabled-strict' });
    await setIdentityDisabled(env.store, strict.uuid, true);
    expect((await put(strict.uuid, currentCode(strict), '10.4.0.2')).status).toBe(403);
  });
});

describe('changing compat settings ends a lockout at once (issue 25)', () => {
  it('6-digit clients locked out under digits 10: after compat --digits 6 the same address registers at once', async () => {
    const id = await compatIdentity('rule-fix', { ...ORIGINAL_COMPAT, digits: 10 });
    // The first two refusals are right codes at a refused length; then plain wrong guesses
    // (another client's typos) until both budgets are spent.
    for (let i = 0; i < 6; i++) await put(id.uuid, i < 2 ? id.code(6) : wrong(id.code(6)), '10.5.0.1');
    expect((await put(id.uuid, id.code(6), '10.5.0.1')).status).toBe(429);
    await setIdentityCompat(env.store, id.uuid, { ...ORIGINAL_COMPAT, digits: 6 });
    await roomInStep(5_000);
    expect((await put(id.uuid, id.code(6), '10.5.0.1')).status).toBe(200);
    expect((await env.store.getAttempts('uuid', id.uuid))?.count ?? 0).toBe(0);
    expect((await env.store.getAttempts('source', '10.5.0.1'))?.count ?? 0).toBe(0);
  });

  it('a rotation and import --force clear the guesses too', async () => {
    await roomInStep(5_000);
    const strict = await provisionIdentity(env.store, { uuid: 'rule-rotate' });
    for (let i = 0; i < 5; i++) await put(strict.uuid, wrong(currentCode(strict)), '10.10.0.1');
    expect((await put(strict.uuid, currentCode(strict), '10.10.0.1')).status).toBe(429);
    const fresh = await rotateIdentitySecret(env.store, strict.uuid);
    expect((await put(strict.uuid, currentCode(fresh), '10.10.0.1')).status).toBe(200);

    const old = await compatIdentity('rule-force');
    for (let i = 0; i < 5; i++) await put(old.uuid, wrong(old.code()), '10.10.0.2');
    expect((await put(old.uuid, old.code(), '10.10.0.2')).status).toBe(429);
    const secret = originalAsciiSecret();
    const report = await importIdentities(env.store, originalRecord(old.uuid, secret), { force: true });
    expect(report.replaced).toEqual([old.uuid]);
    expect((await put(old.uuid, originalCode(secret, stepAt(Date.now())), '10.10.0.2')).status).toBe(200);
  });
});

describe('one-time proofs (issue 26 #10)', () => {
  const proofNow = (id: { uuid: string; secret: string; step: number }) =>
    proofForStep(id, id.uuid, timeStep(id, Date.now()));

  it('after 100 strangers` wrong codes, a proof from a new address registers at once', async () => {
    await roomInStep(10_000);
    const id = await provisionIdentity(env.store, { uuid: 'proof-siege' });
    const answers: Array<{ status: number }> = [];
    // 100 strangers, ten at a time (each from its own address, so only the uuid's budget binds).
    for (let batch = 0; batch < 10; batch++) {
      answers.push(
        ...(await Promise.all(
          Array.from({ length: 10 }, (_, i) => put(id.uuid, wrong(currentCode(id)), `10.6.${batch}.${i}`)),
        )),
      );
    }
    expect(answers.filter((a) => a.status === 401).length).toBeLessThanOrEqual(10);
    expect(answers.filter((a) => a.status === 429).length).toBeGreaterThanOrEqual(80);
    expect((await put(id.uuid, currentCode(id), '10.6.9.9')).status).toBe(429);
    const ok = await put(id.uuid, proofNow(id), '10.6.9.9');
    expect(ok.status).toBe(200);
    expect(ok.body.result.cookie).toMatch(/^R/);
  }, 120_000);

  it('proofs work for compat identities too', async () => {
    const id = await compatIdentity('proof-compat');
    const p = proofForStep({ secret: id.secret }, id.uuid, stepAt(Date.now()));
    // A wrong proof answers as for any uuid (proofs cost nothing, so their answers must not
    // tell a compat identity from others).
    expect(
      await put(
        id.uuid,
        p.replace(/^./, (d) => String((Number(d) + 1) % 10)),
        '10.7.0.1',
      ),
    ).toEqual({
      status: 401,
      body: { error: { permanent: true, diagnostic: 'authentication failed' } },
    });
    expect((await put(id.uuid, p, '10.7.0.1')).status).toBe(200);
  });

  it('wrong, reused and disabled: their answers, and no budget touched', async () => {
    await roomInStep(10_000);
    const id = await provisionIdentity(env.store, { uuid: 'proof-answers' });
    const right = proofNow(id);
    const bad = right.replace(/^./, (d) => String((Number(d) + 1) % 10));
    for (let i = 0; i < 20; i++) {
      expect(await put(id.uuid, bad, '10.8.0.1')).toEqual({
        status: 401,
        body: { error: { permanent: true, diagnostic: 'authentication failed' } },
      });
    }
    expect(await put('proof-nobody', bad, '10.8.0.1')).toEqual({
      status: 401,
      body: { error: { permanent: true, diagnostic: 'authentication failed' } },
    });
    expect((await put(id.uuid, right, '10.8.0.1')).status).toBe(200);
    expect(await put(id.uuid, right, '10.8.0.1')).toEqual({
      status: 401,
      body: { error: { permanent: false, diagnostic: 'proof already used for this step' } },
    });
    expect(await env.store.getAttempts('uuid', id.uuid)).toBeUndefined();
    expect(await env.store.getAttempts('source', '10.8.0.1')).toBeUndefined();
    await setIdentityDisabled(env.store, id.uuid, true);
    expect((await put(id.uuid, right, '10.8.0.1')).status).toBe(403);
  });
});
