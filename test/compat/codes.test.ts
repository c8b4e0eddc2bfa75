/**
 * Codes of imported identities against the model of the original's clients, with a fake clock
 * (`nowMs`) so that the steps of interest — 8-, 9- and 10-digit unreduced values, a short one —
 * are chosen, not waited for. The registration core runs on dynalite.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { draftFromRecord, importIdentities } from '../../cli/import/import.js';
import { newAsciiTotpSecret, ORIGINAL_COMPAT, verifyCode } from '../../core/totp.js';
import { authenticateConnect } from '../../server/connect-auth.js';
import { provisionIdentity } from '../../server/identities.js';
import { COMPAT_MAX_REUSES_PER_STEP } from '../../server/limits.js';
import { registerHiddenServer } from '../../server/register.js';
import { embeddedStore } from '../support/store.js';
import {
  base32Bytes,
  binarySecret,
  originalAsciiSecret,
  originalCode,
  originalRecord,
  rfcCode,
} from './original-model.js';

let env: Awaited<ReturnType<typeof embeddedStore>>;
const policy = { relayHost: '127.0.0.1', relayPort: 1 };
const BASE_STEP = 59_000_000; // 2026: any step works; this keeps the clock plausible.

beforeAll(async () => {
  env = await embeddedStore();
});
afterAll(async () => env?.close());

/** The first step from BASE_STEP whose original code has `digits` digits. */
function stepWithDigits(secret: string, digits: number, from = BASE_STEP): number {
  for (let s = from; s < from + 1_000_000; s++) if (originalCode(secret, s).length === digits) return s;
  throw new Error(`no ${digits}-digit step`);
}
const msOf = (step: number) => step * 30_000 + 1_000;

describe('codes computed the original way', () => {
  const secret = originalAsciiSecret();
  const identity = draftFromRecord(originalRecord('model-codes', secret));
  const id = { ...identity, digits: 10, compat: identity.compat };

  it.each([6, 7, 8, 9, 10])('accepts the unreduced %i-digit value of its step, nothing else', (digits) => {
    const step = stepWithDigits(secret, digits);
    const code = originalCode(secret, step);
    expect(code).toHaveLength(digits);
    expect(verifyCode(id, code, msOf(step))).toBe(step);
    // No ±1 window, as in the original: the neighbouring steps' codes are refused.
    expect(verifyCode(id, originalCode(secret, step - 1), msOf(step))).toBeNull();
    expect(verifyCode(id, originalCode(secret, step + 1), msOf(step))).toBeNull();
    // The zero-padded 10-digit form of a shorter value is not what the original accepted.
    if (digits < 10) expect(verifyCode(id, code.padStart(10, '0'), msOf(step))).toBeNull();
  });

  it('a binary secret gets speakeasy-style codes, which differ from RFC 6238', () => {
    const bin = binarySecret();
    const draft = draftFromRecord(originalRecord('model-bin', bin, 6));
    expect(draft.compat.encoding).toBe('speakeasy');
    // The record's `length` 6 describes its clients, not the server: every length is taken.
    expect(draft.compat.digits).toBe('original');
    const binId = { ...draft, digits: 6 };
    let differing = 0;
    for (let step = BASE_STEP; step < BASE_STEP + 20; step++) {
      const theirs = originalCode(bin, step, 6);
      expect(verifyCode(binId, theirs, msOf(step))).toBe(step);
      if (theirs !== rfcCode(bin, step)) {
        differing++;
        expect(verifyCode(binId, rfcCode(bin, step), msOf(step))).toBeNull();
      }
    }
    expect(differing).toBeGreaterThan(15);
  });

  it('secrets minted by provision --compat are ASCII (speakeasy and RFC 6238 agree on them)', () => {
    for (let i = 0; i < 20; i++) {
      const s = newAsciiTotpSecret();
      expect(s).toMatch(/^[A-Z2-7]{64}$/);
      const bytes = base32Bytes(s);
      expect(bytes.toString('latin1')).toMatch(/^[A-Za-z0-9]{40}$/);
      // ASCII keys: the original's (speakeasy) codes are RFC 6238's, cut instead of reduced.
      for (let step = BASE_STEP; step < BASE_STEP + 5; step++) {
        expect(originalCode(s, step, 6)).toBe(rfcCode(s, step));
      }
    }
  });
});

describe('registration core with an imported identity', () => {
  it('registers with an 8-digit code, again with the same code in its step, never with the last step`s', async () => {
    const secret = originalAsciiSecret();
    const report = await importIdentities(env.store, originalRecord('model-reg', secret));
    expect(report.imported).toEqual(['model-reg']);
    const step = stepWithDigits(secret, 8);
    const code = originalCode(secret, step);
    const first = await registerHiddenServer(env.store, policy, 'model-reg', code, msOf(step), '10.0.0.1');
    const again = await registerHiddenServer(
      env.store,
      policy,
      'model-reg',
      code,
      msOf(step) + 20_000,
      '10.0.0.1',
    );
    expect(first.cookie).toMatch(/^R/);
    expect(again.cookie).not.toBe(first.cookie);
    // The cookie lives until the next registration: no time-based expiry.
    const reg = await env.store.getRegistrationRecord('model-reg');
    expect(reg?.expiresAt).toBeGreaterThan(Date.now() / 1000 + 100 * 365 * 86_400);
    // The next step's code works; after it, this step's code is refused (steps only go forward).
    const next = originalCode(secret, step + 1);
    await registerHiddenServer(env.store, policy, 'model-reg', next, msOf(step + 1), '10.0.0.1');
    await expect(
      registerHiddenServer(env.store, policy, 'model-reg', code, msOf(step + 1), '10.0.0.1'),
    ).rejects.toMatchObject({ code: 'AUTH_FAILED' });
  });

  it('reuse within a step is bounded: concurrent reuses beyond the bound are refused', async () => {
    const secret = originalAsciiSecret();
    await importIdentities(env.store, originalRecord('model-bound', secret));
    const step = stepWithDigits(secret, 9);
    await registerHiddenServer(
      env.store,
      policy,
      'model-bound',
      originalCode(secret, step),
      msOf(step),
      '10.0.0.2',
    );
    const results = await Promise.all(
      Array.from({ length: 8 }, () => env.store.reuseStep('model-bound', step, 'register', 3)),
    );
    expect(results.filter(Boolean)).toHaveLength(3);
    expect(COMPAT_MAX_REUSES_PER_STEP).toBeGreaterThanOrEqual(100);
  });

  it('CONNECT: the same code re-parks with no live park anywhere (any relay); a PUT`s code does not cross over', async () => {
    const secret = originalAsciiSecret();
    await importIdentities(env.store, originalRecord('model-connect', secret));
    const step = stepWithDigits(secret, 10);
    const code = originalCode(secret, step);
    const noPark = async () => false;
    const first = await authenticateConnect(
      env.store,
      {},
      'model-connect',
      { response: code, source: '10.0.0.5' },
      noPark,
      msOf(step),
    );
    const again = await authenticateConnect(
      env.store,
      {},
      'model-connect',
      { response: code, source: '10.0.0.5' },
      noPark,
      msOf(step) + 25_000,
    );
    expect(again.cookie).toBe(first.cookie);
    expect(again.step).toBe(step);
    // The next step's code belongs to a PUT: CONNECT cannot reuse it (one door per code).
    const next = originalCode(secret, step + 1);
    await registerHiddenServer(env.store, policy, 'model-connect', next, msOf(step + 1), '10.0.0.5');
    await expect(
      authenticateConnect(
        env.store,
        {},
        'model-connect',
        { response: next, source: '10.0.0.5' },
        noPark,
        msOf(step + 1),
      ),
    ).rejects.toMatchObject({ code: 'AUTH_FAILED' });

    // A strict identity's CONNECT code with no live park is refused the second time.
    const strict = await provisionIdentity(env.store, { uuid: 'model-connect-strict' });
    const c = rfcCode(strict.secret, step);
    await authenticateConnect(
      env.store,
      {},
      'model-connect-strict',
      { response: c, source: '10.0.0.5' },
      noPark,
      msOf(step),
    );
    await expect(
      authenticateConnect(
        env.store,
        {},
        'model-connect-strict',
        { response: c, source: '10.0.0.5' },
        noPark,
        msOf(step),
      ),
    ).rejects.toMatchObject({ code: 'AUTH_FAILED' });
  });

  it('the guess limits apply to compat identities too', async () => {
    const secret = originalAsciiSecret();
    await importIdentities(env.store, originalRecord('model-limits', secret));
    const tight = { ...policy, maxFailuresPerSource: 2, maxFailures: 100 };
    const at = msOf(BASE_STEP + 11);
    for (let i = 0; i < 2; i++) {
      await expect(
        registerHiddenServer(env.store, tight, 'model-limits', '123456789', at, '10.0.0.9'),
      ).rejects.toMatchObject({ code: 'AUTH_FAILED' });
    }
    await expect(
      registerHiddenServer(env.store, tight, 'model-limits', '123456789', at, '10.0.0.9'),
    ).rejects.toMatchObject({ code: 'TOO_MANY_ATTEMPTS' });
  });

  it('a cookie lifetime in seconds is honoured (the setting, not the deployment default)', async () => {
    const secret = originalAsciiSecret();
    await provisionIdentity(env.store, {
      uuid: 'model-ttl',
      secret,
      compat: { ...ORIGINAL_COMPAT, cookieLifetime: 600 },
    });
    const step = BASE_STEP + 13;
    await registerHiddenServer(
      env.store,
      policy,
      'model-ttl',
      originalCode(secret, step),
      msOf(step),
      '10.0.0.4',
    );
    const reg = await env.store.getRegistrationRecord('model-ttl');
    expect(reg?.expiresAt).toBe(Math.floor(msOf(step) / 1000) + 600);
  });

  it('strict identities still refuse a replayed code', async () => {
    const strict = await provisionIdentity(env.store, { uuid: 'model-strict' });
    const step = BASE_STEP + 7;
    const code = rfcCode(strict.secret, step);
    await registerHiddenServer(env.store, policy, 'model-strict', code, msOf(step), '10.0.0.3');
    await expect(
      registerHiddenServer(env.store, policy, 'model-strict', code, msOf(step), '10.0.0.3'),
    ).rejects.toMatchObject({ code: 'AUTH_FAILED' });
    const reg = await env.store.getRegistrationRecord('model-strict');
    expect(reg?.expiresAt).toBeLessThanOrEqual(Math.floor(msOf(step) / 1000) + 86_400);
  });
});
