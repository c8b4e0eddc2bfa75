/**
 * Issue 30: the relay's cache of per-identity limits (relay/identity-limits.ts) against dynalite:
 * one read per uuid however many ask at once, kept until a notice or the max age, a notice about
 * a uuid never read here costs nothing, a store failure keeps the last known limits, bounded size,
 * and the quota check's usage reads only for identities with a quota.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RendezvousError } from '../../core/errors.js';
import { IdentityLimitsCache, type LimitsStore } from '../../relay/identity-limits.js';
import { perSourceShare } from '../../relay/limits.js';
import { provisionIdentity } from '../../server/identities.js';
import { identityKey } from '../../server/store/keys.js';
import type { IdentityLimits } from '../../server/usage-types.js';
import { embeddedStore } from '../support/store.js';

let env: Awaited<ReturnType<typeof embeddedStore>>;
let raw: DynamoDBDocumentClient;

/** Writes `limits` into the identity item directly (what `store.setLimits` does after its notice). */
async function writeLimits(uuid: string, limits: IdentityLimits | undefined): Promise<void> {
  const { pk, sk } = identityKey(uuid);
  await raw.send(
    new UpdateCommand({
      TableName: 'rendezvous-limits-cache',
      Key: { pk, sk },
      ...(limits
        ? { UpdateExpression: 'SET limits = :l', ExpressionAttributeValues: { ':l': limits } }
        : { UpdateExpression: 'REMOVE limits' }),
    }),
  );
}

/** The real store, its reads counted, and a switch that makes them fail as an outage would. */
function counted(month = 0) {
  const reads = { identity: 0, month: 0 };
  const state = { down: false };
  const store: LimitsStore = {
    getIdentity: (uuid) => {
      reads.identity++;
      if (state.down) return Promise.reject(new RendezvousError('STORE_UNAVAILABLE', 'store unavailable'));
      return env.store.getIdentity(uuid);
    },
    monthBytes: async () => {
      reads.month++;
      if (state.down) throw new RendezvousError('STORE_UNAVAILABLE', 'store unavailable');
      return month;
    },
  };
  return { store, reads, state };
}

beforeAll(async () => {
  env = await embeddedStore('rendezvous-limits-cache');
  raw = DynamoDBDocumentClient.from(
    new DynamoDBClient({
      endpoint: env.endpoint,
      region: 'local',
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    }),
  );
  for (const uuid of ['capped', 'plain', 'other']) await provisionIdentity(env.store, { uuid });
  await writeLimits('capped', { monthlyBytes: 1000, maxConcurrent: 3 });
}, 60_000);

afterAll(async () => {
  raw?.destroy();
  await env?.close();
});

describe('IdentityLimitsCache', () => {
  it('reads a uuid once for concurrent callers and keeps it until a notice', async () => {
    const { store, reads } = counted();
    const cache = new IdentityLimitsCache({ store });
    expect(cache.peek('capped')).toBeUndefined();
    const all = await Promise.all(Array.from({ length: 5 }, () => cache.get('capped')));
    expect(all.every((l) => l?.monthlyBytes === 1000 && l.maxConcurrent === 3)).toBe(true);
    expect(reads.identity).toBe(1);
    await cache.get('capped');
    expect(reads.identity).toBe(1);
    expect(cache.peek('capped')).toEqual({ monthlyBytes: 1000, maxConcurrent: 3 });

    // Changed in the store: the cache keeps the old limits until a notice names the uuid.
    const changes: Array<[string, IdentityLimits | undefined]> = [];
    cache.onChange((uuid, limits) => changes.push([uuid, limits]));
    await writeLimits('capped', { monthlyBytes: 2000 });
    expect((await cache.get('capped'))?.monthlyBytes).toBe(1000);
    cache.onNotice('capped');
    await expect.poll(() => cache.peek('capped')).toEqual({ monthlyBytes: 2000 });
    expect(changes).toEqual([['capped', { monthlyBytes: 2000 }]]);
    expect(reads.identity).toBe(2);

    // A notice about a uuid this relay never read costs no read.
    cache.onNotice('other');
    cache.onNotice('never-seen');
    await new Promise((r) => setTimeout(r, 50));
    expect(reads.identity).toBe(2);

    // Cleared: none again, and the change is reported.
    await writeLimits('capped', undefined);
    cache.onNotice('capped');
    await expect.poll(() => changes.length).toBe(2);
    expect(cache.peek('capped')).toBeUndefined();
    await writeLimits('capped', { monthlyBytes: 1000, maxConcurrent: 3 });
  });

  it('reads again after the max age, and keeps the last known limits when the store fails', async () => {
    let now = Date.UTC(2026, 11, 7, 12);
    const { store, reads, state } = counted();
    const cache = new IdentityLimitsCache({ store, now: () => now, maxAgeMs: 60_000 });
    await cache.get('capped');
    now += 61_000;
    state.down = true;
    expect((await cache.get('capped'))?.monthlyBytes).toBe(1000);
    expect(reads.identity).toBe(2);
    // The failure is not retried at every use.
    await cache.get('capped');
    expect(reads.identity).toBe(2);
    // Never read, store down: no limits (the relay serves rather than refuses).
    expect(await cache.get('plain')).toBeUndefined();
    now += 11_000;
    state.down = false;
    expect((await cache.get('capped'))?.maxConcurrent).toBe(3);
  });

  it('is bounded: the longest-unread uuids are dropped', async () => {
    const { store } = counted();
    const cache = new IdentityLimitsCache({ store, maxEntries: 2 });
    await cache.get('capped');
    await cache.get('plain');
    await cache.get('other');
    expect(cache.fresh('capped')).toBe(false);
    expect(cache.fresh('plain') && cache.fresh('other')).toBe(true);
  });

  it('reads usage only for identities with a quota, at most once per few seconds', async () => {
    let now = Date.UTC(2026, 11, 7, 12);
    const { store, reads, state } = counted(900);
    let local = 0;
    const cache = new IdentityLimitsCache({ store, now: () => now, localBytes: () => local });
    for (let i = 0; i < 5; i++) await cache.checkQuota('plain');
    expect(reads.month).toBe(0);
    for (let i = 0; i < 5; i++) await cache.checkQuota('capped');
    expect(reads.month).toBe(1);
    expect(cache.quotaNow('capped')).toBe('ok');
    expect(cache.quotaNow('plain')).toBe('ok');
    // Bytes counted here and not flushed yet count too.
    local = 100;
    expect(cache.quotaNow('capped')).toBe('exceeded');
    const err = await cache.checkQuota('capped').catch((e: RendezvousError) => e);
    expect(err).toMatchObject({ code: 'QUOTA_EXCEEDED', message: 'quota exceeded', permanent: false });
    // Past the total's few seconds: read again (and kept as it was if the store fails).
    now += 6_000;
    expect(cache.quotaNow('capped')).toBeUndefined();
    state.down = true;
    expect(await cache.overQuota('capped')).toBe(true);
    expect(reads.month).toBe(2);
  });
});

describe('month totals', () => {
  it('a total read just before a UTC month ends is not used in the next month', async () => {
    let now = Date.UTC(2026, 11, 31, 23, 59, 58);
    const { store, reads } = counted(900);
    const cache = new IdentityLimitsCache({ store, now: () => now });
    await cache.checkQuota('capped');
    expect(cache.quotaNow('capped')).toBe('ok');
    now += 3_000;
    expect(cache.quotaNow('capped')).toBeUndefined();
    await cache.checkQuota('capped');
    expect(reads.month).toBe(2);
  });
});

describe('perSourceShare', () => {
  it('scales the per-source share with an identity’s own cap, never below the relay’s unless the cap is', () => {
    // The relay's defaults: 100 live rendezvous per hidden server, 16 from one address.
    expect(perSourceShare(100, 100, 16)).toBe(16);
    expect(perSourceShare(1000, 100, 16)).toBe(160);
    expect(perSourceShare(50, 100, 16)).toBe(16);
    expect(perSourceShare(10, 100, 16)).toBe(10);
    expect(perSourceShare(1, 100, 16)).toBe(1);
  });
});
