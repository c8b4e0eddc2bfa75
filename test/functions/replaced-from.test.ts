/**
 * Issue 28 #5: a registration that replaces a live one tells the holder of the right code when
 * and from where the replaced one was made (`replaced: {at, from}`), so two agents on one uuid
 * learn each other's address from their own PUTs. Compat identities get the original's keys only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ORIGINAL_COMPAT, proofForStep, timeStep } from '../../core/totp.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { provisionIdentity } from '../../server/identities.js';
import type { RegistrationPolicy } from '../../server/register.js';
import { originalAsciiSecret, originalCode, stepAt } from '../compat/original-model.js';
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

const put = async (uuid: string, response: string, source: string) => {
  const r = await register(apiEvent('PUT', { uuid, response }, source));
  return { status: r.statusCode as number, body: resultBody(r) };
};

/** Waits until the current 30 s step has at least `ms` left. */
async function roomInStep(ms: number) {
  const left = 30_000 - (Date.now() % 30_000);
  if (left < ms) await new Promise((r) => setTimeout(r, left + 50));
}

describe('a registration replacing a live one', () => {
  it('says when and from where the replaced one was made, to the holder of a right proof', async () => {
    await roomInStep(10_000);
    const id = await provisionIdentity(env.store, { uuid: 'twin-server' });
    const step = timeStep(id, Date.now());
    const before = Math.floor(Date.now() / 1000) * 1000;
    const first = await put(id.uuid, proofForStep(id, id.uuid, step - 1), '10.1.0.1');
    expect(first.status).toBe(200);
    // Nothing was replaced: no field.
    expect(first.body.result.replaced).toBeUndefined();
    const second = await put(id.uuid, proofForStep(id, id.uuid, step), '10.2.0.2');
    expect(second.status).toBe(200);
    expect(second.body.result.replaced.from).toBe('10.1.0.1');
    const at = Date.parse(second.body.result.replaced.at);
    expect(at).toBeGreaterThanOrEqual(before);
    expect(at).toBeLessThanOrEqual(Date.now());
    expect(second.body.result.replaced.at).toBe(new Date(at).toISOString());
    // The triple itself is unchanged.
    expect(second.body.result).toMatchObject({ host: 'relay.example', port: 8899 });
    expect(second.body.result.cookie).toMatch(/^R/);
  });

  it('is not said to a wrong code, and not to compat identities (the original keys only)', async () => {
    await roomInStep(10_000);
    let secret = originalAsciiSecret();
    while (originalCode(secret, stepAt(Date.now())).length < 9) secret = originalAsciiSecret();
    await provisionIdentity(env.store, { uuid: 'twin-compat', secret, compat: ORIGINAL_COMPAT });
    const code = () => originalCode(secret, stepAt(Date.now()), 40);
    const first = await put('twin-compat', code(), '10.3.0.1');
    expect(first.status).toBe(200);
    // The original let a code register again within its step: a second agent elsewhere does.
    const again = await put('twin-compat', code(), '10.4.0.2');
    expect(again.status).toBe(200);
    expect(again.body.result).not.toHaveProperty('replaced');
    expect(Object.keys(again.body.result).sort()).toEqual(Object.keys(first.body.result).sort());
    const wrong = await put('twin-compat', '1234567', '10.5.0.3');
    expect(JSON.stringify(wrong.body)).not.toContain('10.4.0.2');
  });
});
