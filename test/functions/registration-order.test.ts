/**
 * The PUT's writes as they may fail or be refused between one another (server/register.ts runs
 * the claim beside the new cookie item, then the registration beside its change notice): a
 * replayed code leaves no cookie behind, and a registration that cannot be written after its code
 * was claimed says that the code is spent, whose retry is refused while the next step's registers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRendezvousError, RendezvousError } from '../../core/errors.js';
import { codeForStep, timeStep } from '../../core/totp.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { provisionIdentity } from '../../server/identities.js';
import { registerHiddenServer } from '../../server/register.js';
import type { Store } from '../../server/store/index.js';
import { apiEvent, resultBody } from '../support/api-event.js';
import { embeddedStore } from '../support/store.js';

let env: Awaited<ReturnType<typeof embeddedStore>>;
const policy = { relayHost: 'relay.example', relayPort: 8899 };

beforeAll(async () => {
  env = await embeddedStore();
});
afterAll(() => env.close());

/** The store with `methods` replaced (the rest as is). */
function storeWith(methods: Record<string, (...args: never[]) => unknown>): Store {
  return new Proxy(env.store, {
    get(target, prop, receiver) {
      if (typeof prop === 'string' && prop in methods) return methods[prop];
      const v = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

describe('registration writes between the claim and the answer', () => {
  it('a replayed code leaves no cookie item behind, and the registration stands', async () => {
    const uuid = 'order-replay';
    const id = await provisionIdentity(env.store, { uuid });
    const code = codeForStep(id, timeStep(id, Date.now()));
    const first = await registerHiddenServer(env.store, policy, uuid, code);
    const current = (await env.store.getRegistration(uuid))?.cookie;
    const written: string[] = [];
    const watching = storeWith({
      putRegistrationCookie: async (reg: Parameters<Store['putRegistrationCookie']>[0]) => {
        written.push(reg.cookie);
        return env.store.putRegistrationCookie(reg);
      },
    });
    await expect(registerHiddenServer(watching, policy, uuid, code)).rejects.toSatisfy((e) =>
      isRendezvousError(e, 'AUTH_FAILED'),
    );
    expect(first.cookie).toMatch(/^R/);
    // The replay's cookie (if one was written beside the claim) is gone, not merely not current.
    for (const c of written)
      await expect(env.store.resolveCookie(c)).rejects.toSatisfy(
        (e) => isRendezvousError(e, 'COOKIE_UNKNOWN') && (e as Error).message === 'unknown cookie',
      );
    expect((await env.store.getRegistration(uuid))?.cookie).toBe(current);
  });

  it('a registration the store fails to write after the claim: 503 saying the code is spent; its retry is refused, the next step registers', async () => {
    const uuid = 'order-write-fails';
    const id = await provisionIdentity(env.store, { uuid });
    const step = timeStep(id, Date.now());
    const down = () => {
      throw new RendezvousError('STORE_UNAVAILABLE', 'store unavailable, try again later', {
        permanent: false,
      });
    };
    // Whichever write makes the registration current fails, as a store going down would.
    const failing = storeWith({ putRegistration: down, swapRegistration: down });
    const put = (store: Store, code: string) =>
      makeRegisterHandler(() => ({ store, policy }))(apiEvent('PUT', { uuid, response: code }, '10.4.0.1'));

    const failed = await put(failing, codeForStep(id, step));
    expect(failed.statusCode).toBe(503);
    expect(resultBody(failed).error.permanent).toBe(false);
    expect(resultBody(failed).error.diagnostic).toMatch(/code .*spent/);
    expect(await env.store.getRegistration(uuid)).toBeUndefined();

    // The same code again, the store back: spent (one use per step), so refused.
    expect((await put(env.store, codeForStep(id, step))).statusCode).toBe(401);
    // The next step's code registers.
    const next = await put(env.store, codeForStep(id, step + 1));
    expect(next.statusCode).toBe(200);
    expect((await env.store.getRegistration(uuid))?.cookie).toBeDefined();
  });
});
