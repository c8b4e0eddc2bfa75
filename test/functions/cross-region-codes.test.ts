/**
 * One-time codes across regions (issue 18): two stores standing for two replicas of a global
 * table, with a replicator that copies every change after a lag. A region whose register handler
 * claims steps on its own replica accepts a code the other region accepted a moment ago; claiming
 * on the identity's home replica makes "accepted once, anywhere" true, and the guess limit count
 * across regions. The home replica out of reach: 503 with Retry-After, never a registration.
 */
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRendezvousError } from '../../core/errors.js';
import { codeForStep, currentCode, timeStep } from '../../core/totp.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { startStoreServer } from '../../local/store-server.js';
import { claimsRouterFromEnv } from '../../server/claims.js';
import { authenticateConnect } from '../../server/connect-auth.js';
import { provisionIdentity } from '../../server/identities.js';
import type { RegistrationPolicy } from '../../server/register.js';
import { Store } from '../../server/store/index.js';
import { apiEvent, untilEvaluated } from '../support/api-event.js';
import { closedPort } from '../support/net.js';
import { type Replicator, startReplicator } from '../support/replicator.js';

const TABLE = 'rendezvous-regions';
/** The replication lag: long against a few registrations, even on a loaded machine. */
const LAG_MS = 3_000;

const event = (query: Record<string, string>, sourceIp: string) => apiEvent('PUT', query, sourceIp);

const status = (r: APIGatewayProxyStructuredResultV2) => r.statusCode;

/** A code that is certainly wrong now (not in the ±1 step window). */
function wrongCode(id: Parameters<typeof currentCode>[0], i: number): string {
  const step = timeStep(id, Date.now());
  const valid = new Set([-1, 0, 1].map((d) => codeForStep(id, step + d)));
  for (let n = 1000 + i; ; n += 7919) {
    const c = String(n % 1_000_000).padStart(6, '0');
    if (!valid.has(c)) return c;
  }
}

const policy = (region: string): RegistrationPolicy => ({
  relayHost: `relay.${region}.example`,
  relayPort: 8899,
  region,
  maxFailures: 4,
  maxFailuresPerSource: 100,
  failureWindowSeconds: 300,
});

/** One identity per test (each starts with no claims and no guesses against it). */
const UUIDS = [
  'lag-is-real',
  'both-at-once',
  'home-first',
  'away-first',
  'guessed-at',
  'connect-away',
  'home-down',
];
const identities = new Map<string, Awaited<ReturnType<typeof provisionIdentity>>>();

let servers: Array<{ endpoint: string; close: () => Promise<void> }>;
let home: Store; // eu-west-1, the table's home replica
let away: Store; // us-east-1
let replicator: Replicator;
/** Home region's handler: claims on its own replica, which is the home one. */
let putHome: (uuid: string, code: string, src?: string) => Promise<APIGatewayProxyStructuredResultV2>;
/** The other region's handler, as deployed with RENDEZVOUS_HOME_REGION: claims on the home replica. */
let putAway: typeof putHome;
/** The other region's handler as it was before: claims on its own replica. */
let putAwayLocal: typeof putHome;

beforeAll(async () => {
  servers = [await startStoreServer({ port: 0 }), await startStoreServer({ port: 0 })];
  home = new Store({ table: TABLE, endpoint: servers[0]?.endpoint, region: 'eu-west-1' });
  away = new Store({ table: TABLE, endpoint: servers[1]?.endpoint, region: 'us-east-1' });
  await home.ensureTable();
  await away.ensureTable();
  replicator = startReplicator(TABLE, [servers[0]?.endpoint ?? '', servers[1]?.endpoint ?? ''], LAG_MS);
  const handler = (deps: Parameters<typeof makeRegisterHandler>[0]) => {
    const h = makeRegisterHandler(deps);
    return (uuid: string, response: string, src = '10.9.0.1') => h(event({ uuid, response }, src));
  };
  putHome = handler(() => ({ store: home, policy: policy('eu-west-1') }));
  putAway = handler(() => ({ store: away, policy: policy('us-east-1'), home }));
  putAwayLocal = handler(() => ({ store: away, policy: policy('us-east-1') }));
  // Every test's identity at once: one replication lag to wait out instead of one per test.
  for (const id of await Promise.all(UUIDS.map((uuid) => provisionIdentity(home, { uuid }))))
    identities.set(id.uuid, id);
  for (const uuid of UUIDS)
    while (!(await away.getIdentity(uuid))) await new Promise((r) => setTimeout(r, 50));
});

afterAll(async () => {
  await replicator.stop();
  home.close();
  away.close();
  for (const s of servers) await s.close();
});

/** The identity the tests below use, provisioned in the home region and replicated before them. */
async function provisioned(uuid: string) {
  const id = identities.get(uuid);
  if (!id) throw new Error(`${uuid} is not in UUIDS`);
  return id;
}

describe('one-time codes across regions (issue 18)', () => {
  it('the lag is real: a region claiming on its own replica accepts a code the other accepted', async () => {
    const id = await provisioned('lag-is-real');
    const code = currentCode(id);
    expect(status(await putHome('lag-is-real', code))).toBe(200);
    // Within the lag, the other replica has not seen the accepted step: the replay goes through.
    expect(status(await putAwayLocal('lag-is-real', code))).toBe(200);
  });

  it('one code presented to both regions at once is accepted exactly once', async () => {
    const id = await provisioned('both-at-once');
    const code = currentCode(id);
    const answers = await Promise.all([putHome('both-at-once', code), putAway('both-at-once', code)]);
    expect(answers.map(status).sort()).toEqual([200, 401]);
  });

  it('a code accepted in one region is refused in the other within the lag, either way round', async () => {
    const a = await provisioned('home-first');
    const codeA = currentCode(a);
    expect(status(await putHome('home-first', codeA))).toBe(200);
    expect(status(await putAway('home-first', codeA))).toBe(401);

    const b = await provisioned('away-first');
    const codeB = currentCode(b);
    const first = await putAway('away-first', codeB);
    expect(status(first)).toBe(200);
    expect(JSON.parse(first.body ?? '{}').result.host).toBe('relay.us-east-1.example');
    expect(status(await putHome('away-first', codeB))).toBe(401);
    // The registration was written in the region that served it: its look-ups find it at once.
    expect((await away.getRegistration('away-first'))?.region).toBe('us-east-1');
  });

  it('the guess limit counts across regions', async () => {
    const id = await provisioned('guessed-at');
    // Four wrong codes (the limit), two per region, from addresses that never registered it.
    for (let i = 0; i < 4; i++) {
      const put = i % 2 === 0 ? putHome : putAway;
      // A guess the store timed out on (a busy machine) was not evaluated: it is sent again.
      expect(status(await untilEvaluated(() => put('guessed-at', wrongCode(id, i), `10.8.0.${i + 1}`)))).toBe(
        401,
      );
    }
    // The fifth is refused unevaluated in either region.
    const fifth = await untilEvaluated(() => putAway('guessed-at', wrongCode(id, 5), '10.8.0.9'));
    expect(status(fifth)).toBe(429);
    expect(Number(fifth.headers?.['retry-after'])).toBeGreaterThan(0);
    expect(status(await untilEvaluated(() => putHome('guessed-at', wrongCode(id, 6), '10.8.0.10')))).toBe(
      429,
    );
  });

  it("a relay's CONNECT claims at home too: a code a PUT used in one region is refused in another", async () => {
    const id = await provisioned('connect-away');
    const code = currentCode(id);
    expect(status(await putHome('connect-away', code))).toBe(200);
    const connect = (claims?: Store) =>
      authenticateConnect(
        away,
        {},
        'connect-away',
        { response: code },
        async () => false,
        Date.now(),
        claims,
      );
    await expect(connect(home)).rejects.toSatisfy((e) => isRendezvousError(e, 'AUTH_FAILED'));
    // Claimed on its own replica (the lag), the same CONNECT would have been let in.
    await expect(connect()).resolves.toMatchObject({ uuid: 'connect-away' });
  });

  it('with the home replica out of reach: 503 with Retry-After, and the code stays unused', async () => {
    const id = await provisioned('home-down');
    const unreachable = new Store({
      table: TABLE,
      endpoint: `http://127.0.0.1:${await closedPort()}`,
      region: 'eu-west-1',
    });
    try {
      const h = makeRegisterHandler(() => ({ store: away, policy: policy('us-east-1'), home: unreachable }));
      const code = currentCode(id);
      const r = await h(event({ uuid: 'home-down', response: code }, '10.7.0.1'));
      expect(status(r)).toBe(503);
      expect(Number(r.headers?.['retry-after'])).toBeGreaterThan(0);
      expect(JSON.parse(r.body ?? '{}').error.permanent).toBe(false);
      expect(await away.getRegistrationRecord('home-down')).toBeUndefined();
      // Nothing was claimed: the same code still registers (once) where the claim can be made.
      expect(status(await putAway('home-down', code, '10.7.0.1'))).toBe(200);
    } finally {
      unreachable.close();
    }
  });
});

describe('claimsRouterFromEnv', () => {
  it('claims stay local in one region and in the claims region; another region claims there', async () => {
    const local = new Store({ table: 't1', endpoint: servers[1]?.endpoint, region: 'us-east-1' });
    try {
      expect(claimsRouterFromEnv(local, { AWS_REGION: 'eu-west-1' })).toBeUndefined();
      const atHome = claimsRouterFromEnv(local, {
        AWS_REGION: 'eu-west-1',
        RENDEZVOUS_HOME_REGION: 'eu-west-1',
      });
      expect(atHome?.current).toBe('eu-west-1');
      // The deployed claims region before any record is read (t1 does not exist: unreadable).
      const other = claimsRouterFromEnv(local, {
        AWS_REGION: 'us-east-1',
        RENDEZVOUS_HOME_REGION: 'eu-west-1',
        RENDEZVOUS_TABLE: 't1',
      });
      expect(other?.current).toBe('eu-west-1');
      other?.close();
    } finally {
      local.close();
    }
  });
});
