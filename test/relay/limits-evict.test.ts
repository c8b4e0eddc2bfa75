/**
 * The limits cache holds at most LIMITS_MAX_ENTRIES uuids. Made-up names (which the HTTP port
 * reads to tell identities from strangers) must not push a real identity out; and when one is
 * pushed out anyway (a busy relay), a round reads a live rendezvous's limits again, so a long
 * rendezvous still ends when its month's quota runs out.
 */
import { expect, it } from 'vitest';
import { silentLog } from '../../core/log.js';
import { IdentityLimitsCache, LIMITS_MAX_ENTRIES } from '../../relay/identity-limits.js';
import { KnownNames } from '../../relay/limits.js';
import { ParkingLot } from '../../relay/parking.js';
import { startRevalidation } from '../../relay/revalidate.js';

const capped = '11111111-1111-4111-8111-111111111111';
const madeUp = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
const store = {
  getIdentity: async (uuid: string) =>
    uuid === capped ? ({ uuid, limits: { monthlyBytes: 1000 } } as never) : undefined,
  monthBytes: async () => 5000, // well over the quota
};

function revalidating(cache: IdentityLimitsCache) {
  let revoked = 0;
  const live = { uuids: () => [capped], has: (u: string) => u === capped, revoke: () => ++revoked };
  const rv = startRevalidation({
    store: {
      resolveCookie: async () => ({}) as never,
      getIdentity: store.getIdentity as never,
      changesSince: async () => [],
    },
    lot: new ParkingLot(10),
    cookies: { forget: () => {}, peek: () => undefined },
    log: silentLog,
    refuseGeneric: () => {},
    live: live as never,
    limits: cache,
    periodMs: 1e9,
  });
  return { rv, revoked: () => revoked };
}

it('made-up names read by the relay do not push a real identity out of the limits cache', async () => {
  const cache = new IdentityLimitsCache({ store });
  const names = new KnownNames(store, Date.now, (uuid, id) => id && cache.prime(uuid, id.limits));
  await cache.get(capped);
  for (let i = 0; i < LIMITS_MAX_ENTRIES + 10; i++) await names.known(madeUp(i));
  expect(cache.peek(capped)).toEqual({ monthlyBytes: 1000 });
});

it('a live over-quota rendezvous is ended even after its identity left the cache', async () => {
  const cache = new IdentityLimitsCache({ store });
  await cache.get(capped);
  const { rv, revoked } = revalidating(cache);
  await rv.round();
  expect(revoked()).toBe(1);
  // A busy relay's other identities push it out.
  for (let i = 0; i < LIMITS_MAX_ENTRIES; i++) cache.prime(madeUp(i), undefined);
  expect(cache.peek(capped)).toBeUndefined();
  await rv.round();
  rv.stop();
  expect(revoked()).toBe(2);
});
