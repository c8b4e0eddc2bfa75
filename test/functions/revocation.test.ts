/**
 * Rotation and disable against an embedded store: they end the registration and its cookie
 * record, and a registration racing with a rotation withdraws itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRendezvousError } from '../../core/errors.js';
import { codeForStep, currentCode, timeStep } from '../../core/totp.js';
import { mobileCookieFor } from '../../server/cookies.js';
import {
  deleteIdentity,
  provisionIdentity,
  rotateIdentitySecret,
  setIdentityDisabled,
} from '../../server/identities.js';
import { lookupHiddenServer } from '../../server/lookup.js';
import { registerHiddenServer } from '../../server/register.js';
import { type Store, Store as StoreClass } from '../../server/store/index.js';
import { embeddedStore } from '../support/store.js';

let env: Awaited<ReturnType<typeof embeddedStore>>;
const policy = { relayHost: 'relay.example', relayPort: 8899 };

beforeAll(async () => {
  env = await embeddedStore();
});
afterAll(() => env.close());

describe('revocation in the store', () => {
  it('rotate and disable delete the registration and the cookie record; the old code is refused', async () => {
    for (const how of ['rotate', 'disable'] as const) {
      const uuid = `rev-${how}`;
      const id = await provisionIdentity(env.store, { uuid });
      const step = timeStep(id, Date.now());
      const r = await registerHiddenServer(env.store, policy, uuid, codeForStep(id, step));
      const i = mobileCookieFor(r.cookie.slice(1));
      expect((await env.store.resolveCookie(i)).uuid).toBe(uuid);
      if (how === 'rotate') await rotateIdentitySecret(env.store, uuid);
      else await setIdentityDisabled(env.store, uuid, true);
      expect(await env.store.getRegistrationRecord(uuid)).toBeUndefined();
      await expect(env.store.resolveCookie(i)).rejects.toSatisfy((e) =>
        isRendezvousError(e, 'COOKIE_UNKNOWN'),
      );
      // A fresh code of the old secret no longer registers: after a rotation it is a wrong code;
      // while disabled it is right, and its holder is told why (issue 25).
      await expect(
        registerHiddenServer(env.store, policy, uuid, codeForStep(id, step + 1)),
      ).rejects.toSatisfy((e) =>
        isRendezvousError(e, how === 'rotate' ? 'AUTH_FAILED' : 'IDENTITY_DISABLED'),
      );
      expect((await env.store.getIdentity(uuid))?.generation).toBe(1);
    }
  });

  it('a registration that races with a rotation withdraws itself (codes claimed on another replica)', async () => {
    const uuid = 'rev-race';
    const id = await provisionIdentity(env.store, { uuid });
    let written = '';
    // The real store; the rotation lands between the registration's write and its re-check. The
    // claims go through a second client on the same table, as an away region's claims replica:
    // there the re-check follows the write.
    const claims = new StoreClass({ table: env.store.table, endpoint: env.endpoint, region: 'local' });
    const racing = new Proxy(env.store, {
      get(target, prop, receiver) {
        if (prop === 'swapRegistration') {
          return async (reg: Parameters<Store['swapRegistration']>[0]) => {
            const out = await target.swapRegistration(reg);
            written = reg.cookie;
            await rotateIdentitySecret(target, uuid);
            return out;
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    try {
      await expect(
        registerHiddenServer(racing, policy, uuid, currentCode(id), Date.now(), undefined, claims),
      ).rejects.toSatisfy((e) => isRendezvousError(e, 'AUTH_FAILED'));
    } finally {
      claims.close();
    }
    expect(written).not.toBe('');
    expect(await env.store.getRegistrationRecord(uuid)).toBeUndefined();
    await expect(env.store.resolveCookie(written)).rejects.toSatisfy((e) =>
      isRendezvousError(e, 'COOKIE_UNKNOWN'),
    );
  });

  it('a registration whose code was claimed before a rotation or disable is refused when it is written after it', async () => {
    for (const how of ['rotate', 'disable', 'delete'] as const) {
      const uuid = `rev-fence-${how}`;
      const id = await provisionIdentity(env.store, { uuid });
      let cookie = '';
      // The claim has passed (old generation); the rotation runs whole before the registration is written.
      const racing = new Proxy(env.store, {
        get(target, prop, receiver) {
          if (prop === 'swapRegistration') {
            return async (reg: Parameters<Store['swapRegistration']>[0]) => {
              cookie = reg.cookie;
              if (how === 'rotate') await rotateIdentitySecret(target, uuid);
              else if (how === 'disable') await setIdentityDisabled(target, uuid, true);
              else await deleteIdentity(target, uuid);
              return target.swapRegistration(reg);
            };
          }
          const v = Reflect.get(target, prop, receiver);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
      await expect(registerHiddenServer(racing, policy, uuid, currentCode(id))).rejects.toSatisfy((e) =>
        isRendezvousError(e, 'AUTH_FAILED'),
      );
      expect(cookie).not.toBe('');
      expect(await env.store.getRegistrationRecord(uuid)).toBeUndefined();
      expect(await lookupHiddenServer(env.store, uuid).catch((e) => e.code)).toBe('NOT_REGISTERED');
      await expect(env.store.resolveCookie(cookie)).rejects.toSatisfy((e) =>
        isRendezvousError(e, 'COOKIE_UNKNOWN'),
      );
    }
  });

  it('a registration written just before a rotation ends with it, whatever it was answered', async () => {
    const uuid = 'rev-after-swap';
    const id = await provisionIdentity(env.store, { uuid });
    let cookie = '';
    const racing = new Proxy(env.store, {
      get(target, prop, receiver) {
        if (prop === 'swapRegistration') {
          return async (reg: Parameters<Store['swapRegistration']>[0]) => {
            const out = await target.swapRegistration(reg);
            cookie = reg.cookie;
            await rotateIdentitySecret(target, uuid);
            return out;
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    // Answered 401 when the re-read saw the rotation, else 200 with a cookie that is already gone.
    await registerHiddenServer(racing, policy, uuid, currentCode(id)).catch((e) => {
      if (!isRendezvousError(e, 'AUTH_FAILED')) throw e;
    });
    expect(await env.store.getRegistrationRecord(uuid)).toBeUndefined();
    await expect(env.store.resolveCookie(cookie)).rejects.toSatisfy((e) =>
      isRendezvousError(e, 'COOKIE_UNKNOWN'),
    );
  });

  it('after a disable and enable, and after a deletion and a new provisioning, the uuid registers', async () => {
    const uuid = 'rev-fence-lifted';
    const id = await provisionIdentity(env.store, { uuid });
    const step = timeStep(id, Date.now());
    await setIdentityDisabled(env.store, uuid, true);
    await setIdentityDisabled(env.store, uuid, false);
    await registerHiddenServer(env.store, policy, uuid, codeForStep(id, step));
    expect((await lookupHiddenServer(env.store, uuid)).cookie).toMatch(/^I/);
    await deleteIdentity(env.store, uuid);
    const again = await provisionIdentity(env.store, { uuid });
    await registerHiddenServer(env.store, policy, uuid, currentCode(again));
    expect((await lookupHiddenServer(env.store, uuid)).cookie).toMatch(/^I/);
  });

  it('withdrawing a registration leaves a newer one alone', async () => {
    const uuid = 'rev-newer';
    const id = await provisionIdentity(env.store, { uuid });
    const step = timeStep(id, Date.now());
    const first = await registerHiddenServer(env.store, policy, uuid, codeForStep(id, step));
    const second = await registerHiddenServer(env.store, policy, uuid, codeForStep(id, step + 1));
    await env.store.deleteRegistration(uuid, mobileCookieFor(first.cookie.slice(1)));
    expect((await env.store.resolveCookie(mobileCookieFor(second.cookie.slice(1)))).uuid).toBe(uuid);
  });
});
