/**
 * The claims router (server/claims.ts) on a real store: where codes are claimed before and after
 * a move, what it makes of a record it cannot use, and that an unreadable record never undoes a
 * move (a region that lost its own replica must not fall back to a claims region that is down).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClaimsRouter, moveClaimsRegion } from '../../server/claims.js';
import { Store } from '../../server/store/index.js';
import { embeddedStore } from '../support/store.js';

let env: Awaited<ReturnType<typeof embeddedStore>>;

beforeAll(async () => {
  env = await embeddedStore('claims-router');
});

afterAll(async () => {
  await env?.close();
});

/** A router in us-east-1 deployed to claim in eu-west-1; `made` lists the stores it asked for. */
function router(local: Store, made: string[] = []) {
  return new ClaimsRouter({
    local,
    here: 'us-east-1',
    deployed: 'eu-west-1',
    storeFor: (region) => {
      made.push(region);
      return new Store({ table: env.store.table, endpoint: env.endpoint, region });
    },
    refreshMs: 0,
  });
}

describe('ClaimsRouter', () => {
  it('claims in the deployed region until a move, then where the record says (local: undefined)', async () => {
    const made: string[] = [];
    const r = router(env.store, made);
    try {
      expect((await r.claims())?.settings.region).toBe('eu-west-1');
      await env.store.setClaimsRegion('us-west-2');
      expect((await r.claims())?.settings.region).toBe('us-west-2');
      expect((await r.claims())?.settings.region).toBe('us-west-2');
      await env.store.setClaimsRegion('us-east-1');
      // Its own region: the caller's own store.
      expect(await r.claims()).toBeUndefined();
      expect(r.current).toBe('us-east-1');
      // One store per region, however many requests.
      expect(made).toEqual(['eu-west-1', 'us-west-2']);
    } finally {
      r.close();
    }
  });

  it('ignores a record that names no region', async () => {
    await env.store.setClaimsRegion('nowhere');
    const r = router(env.store);
    try {
      expect((await r.claims())?.settings.region).toBe('eu-west-1');
    } finally {
      r.close();
    }
  });

  it('keeps the moved region while its own replica cannot be read', async () => {
    const own = await embeddedStore('claims-router-own');
    await own.store.setClaimsRegion('us-west-2');
    const r = router(own.store);
    try {
      expect(r.current).toBe('eu-west-1');
      await r.claims();
      expect(r.current).toBe('us-west-2');
      await own.close(); // its replica is gone: every read of the record fails from here on
      await expect(own.store.getClaimsRegion()).rejects.toThrow();
      expect((await r.claims())?.settings.region).toBe('us-west-2');
    } finally {
      r.close();
    }
  });
});

describe('moveClaimsRegion', () => {
  it('refuses a region that is not one of the table’s, before writing anything', async () => {
    await expect(moveClaimsRegion('eu-west-1', ['us-east-1'], () => env.store)).rejects.toThrow(
      /eu-west-1 is not one of the table's regions \(us-east-1\)/,
    );
    await expect(moveClaimsRegion('x', ['x'], () => env.store)).rejects.toThrow(/not a region name: x/);
  });
});
