/**
 * Grants derived from what the code calls (issue 27, item 3): the register and lookup handlers
 * and the relay run against a real store (dynalite) behind recording proxies, one per component
 * and replica, which note the DynamoDB action of every request as it goes on the wire (the
 * `X-Amz-Target` header: what IAM authorises). Their scenarios walk every path that touches the
 * table — a registration, a wrong code, a lockout, a registration that races a rotation and
 * withdraws itself, look-ups found and not, parks and rendezvous over both protocols, a drain.
 * The actions each component called on each replica must all be granted to its role on that
 * replica's ARN in the synthesised template; for the functions, the grant is exactly what they call.
 */
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import { type AddressInfo, createConnection, type Socket } from 'node:net';
import { Template } from 'aws-cdk-lib/assertions';
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHiddenServer, type HiddenServer } from '../../client/hidden-server.js';
import { connect } from '../../client/mobile.js';
import { compatCodeForStep, currentCode, ORIGINAL_COMPAT, timeStep } from '../../core/totp.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { makeRegisterHandler } from '../../functions/register.js';
import type { RendezvousStack } from '../../infra/stack.js';
import { startApiAdapter } from '../../local/api-adapter.js';
import { startStoreServer } from '../../local/store-server.js';
import { type Relay, startRelay } from '../../relay/server.js';
import { ClaimsRouter } from '../../server/claims.js';
import { provisionIdentity, rotateIdentitySecret } from '../../server/identities.js';
import type { RegistrationPolicy } from '../../server/register.js';
import { Store } from '../../server/store/index.js';
import { emptyTotals } from '../../server/usage-types.js';
import { apiEvent } from '../support/api-event.js';
import { freePort, readAll, startEchoServer } from '../support/net.js';
import { synthApp } from './cdk-app.js';

const TABLE = 'rendezvous';
const HOME = 'us-east-1';
const HERE = 'eu-west-1';

/** A proxy in front of the store that records each request's DynamoDB action, with a hook before forwarding. */
async function recordingProxy(target: string) {
  const actions = new Set<string>();
  const to = new URL(target);
  let before: ((action: string, body: string) => Promise<void>) | undefined;
  const server = createHttpServer((req, res) => {
    const action = String(req.headers['x-amz-target'] ?? '?')
      .split('.')
      .pop() as string;
    actions.add(`dynamodb:${action}`);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      await before?.(action, body.toString()).catch(() => undefined);
      const up = httpRequest(
        { host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
        },
      );
      up.on('error', () => res.destroy());
      up.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    actions,
    onRequest(fn: typeof before) {
      before = fn;
    },
    close: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}
type Proxy = Awaited<ReturnType<typeof recordingProxy>>;

/** The DynamoDB actions a policy (by logical-id part) grants on `region`'s replica of the table. */
function granted(t: Template, part: string, region: string): string[] {
  const policies = Object.entries(
    t.findResources('AWS::IAM::Policy') as Record<
      string,
      {
        Properties: {
          PolicyDocument: { Statement: Array<{ Effect: string; Action: unknown; Resource: unknown }> };
        };
      }
    >,
  ).filter(([id]) => id.includes(part));
  if (policies.length === 0) throw new Error(`no policy for ${part}`);
  const out = new Set<string>();
  for (const [, p] of policies)
    for (const s of p.Properties.PolicyDocument.Statement) {
      if (s.Effect !== 'Allow') continue;
      const resources = JSON.stringify(s.Resource);
      // This region's replica: its ARN names the region, or (in the stack's own region) the
      // pseudo-parameter AWS::Region.
      const here =
        resources.includes(`:dynamodb:${region}:`) || (region === HERE && resources.includes('AWS::Region'));
      if (!here || !resources.includes(`:table/${TABLE}`)) continue;
      for (const a of ([] as string[]).concat(s.Action as string)) if (a.startsWith('dynamodb:')) out.add(a);
    }
  return [...out].sort();
}

let dynalite: Awaited<ReturnType<typeof startStoreServer>>;
let direct: Store;
const proxies: Record<string, Proxy> = {};
const stores: Store[] = [];
let relay: Relay;
let api: Awaited<ReturnType<typeof startApiAdapter>>;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
const hidden: HiddenServer[] = [];
let template: Template;

const storeOn = (proxy: Proxy, region: string) => {
  const s = new Store({ table: TABLE, endpoint: proxy.endpoint, region });
  stores.push(s);
  return s;
};

beforeAll(async () => {
  // The stack of a region that is not the home: its roles are granted on both replicas.
  template = Template.fromStack(
    synthApp({ regions: `${HOME},${HERE}` }).stacks.find(
      (s: RendezvousStack) => s.region === HERE,
    ) as RendezvousStack,
  );
  dynalite = await startStoreServer({ port: 0 });
  direct = new Store({ table: TABLE, endpoint: dynalite.endpoint, region: HERE });
  await direct.ensureTable();
  for (const name of ['register', 'registerHome', 'lookup', 'lookupHome', 'relay', 'relayHome', 'relayUsage'])
    proxies[name] = await recordingProxy(dynalite.endpoint);
  echo = await startEchoServer();
}, 300_000);

afterAll(async () => {
  for (const h of hidden) h.close();
  await relay?.close();
  await api?.close();
  for (const s of stores) s.close();
  for (const p of Object.values(proxies)) p.close();
  direct?.close();
  await echo?.close();
  await dynalite?.close();
});

const p = (name: string) => proxies[name] as Proxy;

describe('the register function', () => {
  it('is granted exactly the actions its code calls, on each replica', async () => {
    const policy: RegistrationPolicy = {
      relayHost: 'relay.example',
      relayPort: 8899,
      region: HERE,
      maxFailures: 3,
      maxFailuresPerSource: 100,
      failureWindowSeconds: 300,
    };
    // As deployed: a claims router (RENDEZVOUS_HOME_REGION) that reads the claims-region record on
    // this region's replica and claims on the home's.
    const local = storeOn(p('register'), HERE);
    const home = storeOn(p('registerHome'), HOME);
    const claims = new ClaimsRouter({
      local,
      here: HERE,
      deployed: HOME,
      storeFor: (r) => (r === HOME ? home : local),
    });
    const deps = { store: local, policy, claims };
    const register = makeRegisterHandler(() => deps);
    const put = (uuid: string, response: string): Promise<APIGatewayProxyStructuredResultV2> =>
      register(apiEvent('PUT', { uuid, response }, '10.1.0.1'));

    const ok = await provisionIdentity(direct);
    expect((await put(ok.uuid, currentCode(ok))).statusCode).toBe(200);
    // Again in the next step (a replacement: the old cookie is noted as changed).
    const next = currentCode(ok, Date.now() + 30_000);
    const again = await register(apiEvent('PUT', { uuid: ok.uuid, response: next }, '10.1.0.1'));
    expect([200, 401]).toContain(again.statusCode);
    // An identity that keeps its cookie until the next registration, registered twice.
    const kept = await provisionIdentity(direct, { compat: ORIGINAL_COMPAT });
    const keptCode = () => compatCodeForStep(kept, ORIGINAL_COMPAT, timeStep(kept, Date.now()));
    // The original's full value may be shorter than the 6 digits our check wants: then the
    // identity cannot register in this step, and the replacement path is left to the next one.
    for (let i = 0; i < 2; i++) await put(kept.uuid, keptCode());
    // Wrong codes up to the lockout, and an unknown uuid.
    const guessed = await provisionIdentity(direct);
    for (let i = 0; i < 5; i++) await put(guessed.uuid, '000000');
    expect((await put(guessed.uuid, '000000')).statusCode).toBe(429);
    expect((await put('nobody-here', '123456')).statusCode).toBe(401);
    // A rotation lands between the registration's write and its re-check: the registration
    // withdraws itself (the code path that deletes).
    const raced = await provisionIdentity(direct);
    p('register').onRequest(async (action, body) => {
      if (action === 'PutItem' && body.includes('"REGISTRATION"') && body.includes(raced.uuid)) {
        p('register').onRequest(undefined);
        await rotateIdentitySecret(direct, raced.uuid);
      }
    });
    expect((await put(raced.uuid, currentCode(raced))).statusCode).toBe(401);
    expect(await direct.getRegistration(raced.uuid)).toBeUndefined();

    const called = [...p('register').actions].sort();
    const calledHome = [...p('registerHome').actions].sort();
    expect(called).toContain('dynamodb:DeleteItem');
    expect(granted(template, 'Register', HERE)).toEqual(called);
    // Identities are read, codes claimed and guesses counted on the home replica.
    expect(calledHome).toContain('dynamodb:GetItem');
    expect(granted(template, 'Register', HOME)).toEqual(calledHome);
  });
});

describe('the lookup function', () => {
  it('is granted exactly the actions its code calls', async () => {
    const deps = { store: storeOn(p('lookup'), HERE) };
    const lookup = makeLookupHandler(() => deps);
    const id = await provisionIdentity(direct);
    expect((await lookup(apiEvent('GET', { uuid: id.uuid }, '10.1.0.2'))).statusCode).toBe(404);
    expect((await lookup(apiEvent('GET', { uuid: 'nobody-here' }, '10.1.0.2'))).statusCode).toBe(404);
    const called = [...p('lookup').actions].sort();
    expect(granted(template, 'Lookup', HERE)).toEqual(called);
    // Look-ups read this region's replica only: nothing on the home replica.
    expect(granted(template, 'Lookup', HOME)).toEqual([...p('lookupHome').actions].sort());
  });
});

describe('the relay task', () => {
  it('is granted what metering and quota checks call on the usage records, on each replica', async () => {
    // What a relay's meter flush (addUsage) and quota check (monthBytes) send, on either replica.
    const usage = storeOn(p('relayUsage'), HERE);
    const delta = emptyTotals();
    delta.generic.bytesToMobile = 1_000;
    delta.generic.rendezvous = 1;
    await usage.addUsage('grants-usage', delta);
    expect(await usage.monthBytes('grants-usage')).toBe(1_000);
    const called = [...p('relayUsage').actions].sort();
    expect(called).toEqual(['dynamodb:Query', 'dynamodb:UpdateItem']);
    expect(granted(template, 'RelayTask', HERE)).toEqual(expect.arrayContaining(called));
    expect(granted(template, 'RelayTask', HOME)).toEqual(expect.arrayContaining(called));
  });

  it('is granted every action the relay calls, on each replica', async () => {
    const httpPort = await freePort();
    relay = await startRelay({
      store: storeOn(p('relay'), HERE),
      home: storeOn(p('relayHome'), HOME),
      port: 0,
      httpPort,
      region: HERE,
      httpPublicUrl: `http://127.0.0.1:${httpPort}`,
      revalidateMs: 200,
    });
    const policy: RegistrationPolicy = {
      relayHost: '127.0.0.1',
      relayPort: relay.address.port,
      region: HERE,
      maxFailures: 5,
      maxFailuresPerSource: 100,
      failureWindowSeconds: 300,
    };
    // The API the hidden servers use is recorded as the register function's, not the relay's.
    const apiStore = storeOn(p('register'), HERE);
    api = await startApiAdapter({
      register: makeRegisterHandler(() => ({ store: apiStore, policy })),
      lookup: makeLookupHandler(() => ({ store: apiStore })),
      port: 0,
    });
    const generic = await provisionIdentity(direct);
    const web = await provisionIdentity(direct);
    const onEcho = (s: Socket) => {
      const up = createConnection({ host: '127.0.0.1', port: echo.port });
      s.pipe(up).pipe(s);
    };
    const app = createHttpServer((_req, res) => res.end('pong'));
    const onWeb = (s: Socket) => app.emit('connection', s);
    for (const [id, opts, serve] of [
      [generic, { api: api.url }, onEcho],
      [web, { protocol: 'http', relay: `http://127.0.0.1:${httpPort}` }, onWeb],
    ] as const) {
      const h = createHiddenServer({ ...opts, uuid: id.uuid, secret: id.secret, pool: 1 } as never, serve);
      hidden.push(h);
      await new Promise<void>((resolve, reject) => {
        h.once('error', reject);
        h.listen(() => resolve());
      });
    }
    // A rendezvous over the generic protocol, bytes both ways.
    const mobile = await connect({ api: api.url, uuid: generic.uuid });
    mobile.end('hello');
    expect((await readAll(mobile)).toString()).toBe('hello');
    // One over the HTTP-specific protocol.
    const res = await fetch(`http://127.0.0.1:${httpPort}/?rendezvous=${web.uuid}`, {
      method: 'POST',
      body: 'ping',
    });
    expect(await res.text()).toBe('pong');
    // The identity rotated under a parked hidden server (the relay's change pass reads it), then a drain.
    await rotateIdentitySecret(direct, generic.uuid);
    await new Promise((r) => setTimeout(r, 1_500));
    for (const h of hidden.splice(0)) h.close();
    await relay.close();

    const called = [...p('relay').actions].sort();
    const calledHome = [...p('relayHome').actions].sort();
    expect(called.length).toBeGreaterThan(2);
    expect(granted(template, 'RelayTask', HERE)).toEqual(expect.arrayContaining(called));
    expect(granted(template, 'RelayTask', HOME)).toEqual(expect.arrayContaining(calledHome));
  }, 120_000);
});
