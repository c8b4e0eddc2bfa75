/**
 * The claims region fails over (issue 27, item 8). Two dynalite stores stand for two replicas of
 * the global table, eu-west-1 (the home, where codes are claimed) and us-east-1, with a lagging
 * replicator between them. The home is stopped: us-east-1 answers 503 for registrations, as every
 * region did with no fallback. The operator runs one command, `rendezvous claims-region
 * us-east-1`; every region follows within its refresh period and registrations continue, still
 * once per code. What the move costs is shown too: a code claimed at home moments before it went
 * down, whose claim never replicated, is accepted once more (the replay window).
 */
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeForStep, timeStep } from '../../core/totp.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { startStoreServer } from '../../local/store-server.js';
import { type Relay, startRelay } from '../../relay/server.js';
import { ClaimsRouter } from '../../server/claims.js';
import { provisionIdentity } from '../../server/identities.js';
import type { RegistrationPolicy } from '../../server/register.js';
import { Store } from '../../server/store/index.js';
import { apiEvent } from '../support/api-event.js';
import { exitWithin, spawnCli } from '../support/cli.js';
import { rawExchange } from '../support/net.js';
import { type Replicator, startReplicator } from '../support/replicator.js';
import { waitFor } from '../support/wait.js';

const TABLE = 'rendezvous-claims-failover';
/** Long against a registration, so the last claim at home is still unreplicated when it stops. */
const LAG_MS = 5_000;

const policy: RegistrationPolicy = {
  relayHost: 'relay.us-east-1.example',
  relayPort: 8899,
  region: 'us-east-1',
  maxFailures: 4,
  maxFailuresPerSource: 100,
  failureWindowSeconds: 300,
};

let home: { endpoint: string; close: () => Promise<void> };
let away: { endpoint: string; close: () => Promise<void> };
let homeStore: Store;
let awayStore: Store;
let replicator: Replicator;
let router: ClaimsRouter;
let relay: Relay;
let relayRouter: ClaimsRouter;
let put: (uuid: string, code: string) => Promise<APIGatewayProxyStructuredResultV2>;

const endpoints = () => ({ 'eu-west-1': home.endpoint, 'us-east-1': away.endpoint });

beforeAll(async () => {
  home = await startStoreServer({ port: 0 });
  away = await startStoreServer({ port: 0 });
  homeStore = new Store({ table: TABLE, endpoint: home.endpoint, region: 'eu-west-1' });
  awayStore = new Store({ table: TABLE, endpoint: away.endpoint, region: 'us-east-1' });
  await homeStore.ensureTable();
  await awayStore.ensureTable();
  replicator = startReplicator(TABLE, [home.endpoint, away.endpoint], LAG_MS);
  // us-east-1's register handler as deployed there: claims in the deployed claims region (the
  // home), unless the claims-region record on its own replica says otherwise.
  router = new ClaimsRouter({
    local: awayStore,
    here: 'us-east-1',
    deployed: 'eu-west-1',
    storeFor: (region) => new Store({ table: TABLE, endpoint: endpoints()[region as 'eu-west-1'], region }),
    refreshMs: 200,
  });
  const handler = makeRegisterHandler(() => ({ store: awayStore, policy, claims: router }));
  put = (uuid, response) => handler(apiEvent('PUT', { uuid, response }, '10.6.0.1'));
  // us-east-1's relay, whose CONNECTs claim codes the same way.
  relayRouter = new ClaimsRouter({
    local: awayStore,
    here: 'us-east-1',
    deployed: 'eu-west-1',
    storeFor: (region) => new Store({ table: TABLE, endpoint: endpoints()[region as 'eu-west-1'], region }),
    refreshMs: 200,
  });
  relay = await startRelay({
    store: awayStore,
    port: 0,
    httpPort: 0,
    host: '127.0.0.1',
    region: 'us-east-1',
    claims: relayRouter,
  });
}, 60_000);

/** The first line a CONNECT with `code` gets from us-east-1's relay. */
async function connect(uuid: string, code: string): Promise<string> {
  const port = relay.httpAddress?.port as number;
  const out = await rawExchange(
    port,
    `CONNECT uuid:${uuid}?response=${code} HTTP/1.1\r\nHost: relay\r\n\r\n`,
    15_000,
  );
  return out.text.split('\r\n')[0] ?? '';
}

afterAll(async () => {
  await relay?.close();
  relayRouter?.close();
  await replicator.stop();
  router.close();
  homeStore.close();
  awayStore.close();
  await away.close();
  await home.close().catch(() => undefined);
});

/** A code valid for at least one more step from now (room for a command to start on a busy machine). */
const nextCode = (id: Parameters<typeof codeForStep>[0]) => codeForStep(id, timeStep(id, Date.now()) + 1);

describe('the claims region fails over (issue 27)', () => {
  it('home down: 503 until one command moves the claims region, then registrations continue', async () => {
    const early = await provisionIdentity(homeStore, { uuid: 'claimed-before-outage' });
    const late = await provisionIdentity(homeStore, { uuid: 'registers-during-outage' });
    const parker = await provisionIdentity(homeStore, { uuid: 'parks-during-outage' });
    await waitFor(
      async () =>
        !!(await awayStore.getIdentity(early.uuid)) &&
        !!(await awayStore.getIdentity(late.uuid)) &&
        !!(await awayStore.getIdentity(parker.uuid)),
      30_000,
      'identities replicated to us-east-1',
    );

    // Before the outage us-east-1 claims at home.
    const earlyCode = nextCode(early);
    expect((await put(early.uuid, earlyCode)).statusCode).toBe(200);
    expect((await homeStore.getIdentity(early.uuid))?.lastStep).toBeDefined();

    // The home region goes down before that claim reaches us-east-1's replica.
    await replicator.stop();
    await home.close();
    expect((await awayStore.getIdentity(early.uuid))?.lastStep).toBeUndefined();

    // During the outage: 503 with Retry-After (not evaluated, nothing written).
    const lateCode = nextCode(late);
    const refused = await put(late.uuid, lateCode);
    expect(refused.statusCode).toBe(503);
    expect(Number(refused.headers?.['retry-after'])).toBeGreaterThan(0);
    // The relay's CONNECT cannot claim either.
    const parkerCode = nextCode(parker);
    expect(await connect(parker.uuid, parkerCode)).toMatch(/^HTTP\/1\.1 503/);

    // The operator's one command. It writes the record on every replica it reaches and says
    // which it could not (the home gets it by replication once it is back).
    const cli = spawnCli(
      [
        'claims-region',
        'us-east-1',
        '--regions',
        'eu-west-1,us-east-1',
        '--endpoint',
        `eu-west-1=${home.endpoint}`,
        '--endpoint',
        `us-east-1=${away.endpoint}`,
      ],
      { RENDEZVOUS_TABLE: TABLE, AWS_ACCESS_KEY_ID: 'local', AWS_SECRET_ACCESS_KEY: 'local' },
    );
    let out = '';
    cli.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
    });
    cli.stderr?.on('data', (c: Buffer) => {
      out += c.toString();
    });
    expect(await exitWithin(cli, 60_000)).toBe(0);
    expect(out).toMatch(/claims region: us-east-1/);
    expect(out).toMatch(/eu-west-1: not reached/);

    // us-east-1 follows within its refresh period, and registrations continue, once per code.
    await waitFor(
      async () => {
        await router.claims();
        return router.current === 'us-east-1';
      },
      10_000,
      'router moved',
    );
    expect((await put(late.uuid, lateCode)).statusCode).toBe(200);
    expect((await put(late.uuid, lateCode)).statusCode).toBe(401);
    // The relay follows the same record: its CONNECTs park again.
    await waitFor(
      async () => {
        await relayRouter.claims();
        return relayRouter.current === 'us-east-1';
      },
      10_000,
      'relay router moved',
    );
    expect(await connect(parker.uuid, parkerCode)).toBe('HTTP/1.1 200 OK');

    // The cost: the code claimed at home just before the outage never reached this replica, so
    // it is accepted once more here — once, and only while the code is valid.
    expect((await put(early.uuid, earlyCode)).statusCode).toBe(200);
    expect((await put(early.uuid, earlyCode)).statusCode).toBe(401);
  }, 120_000);
});
