/**
 * Store round trips per registration-path request, counted at a proxy in front of the store that
 * holds every request for a fixed delay (so a round trip shows as time, and requests sent together
 * overlap). Per request: the total number of store requests, and the sequential ones — the longest
 * chain of requests each starting after the previous one ended (the critical path). Requests run
 * one at a time, each on a fresh identity, in-process through the same handlers Lambda runs.
 * Two stores stand for two regions (as test/functions/cross-region-codes.test.ts does): a PUT
 * served in the away region with its claims in the home region counts the home store's requests
 * as cross-region round trips.
 */
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { codeForStep, currentCode, proofForStep, timeStep } from '../core/totp.js';
import { makeLookupHandler } from '../functions/lookup.js';
import { makeRegisterHandler } from '../functions/register.js';
import { startStoreServer } from '../local/store-server.js';
import { authenticateConnect } from '../server/connect-auth.js';
import { provisionIdentity } from '../server/identities.js';
import type { RegistrationPolicy } from '../server/register.js';
import { type Identity, Store } from '../server/store/index.js';
import { apiEvent } from '../test/support/api-event.js';

/** One store request as the proxy saw it: its operation and when it was held and answered. */
interface Span {
  op: string;
  start: number;
  end: number;
}

/** A proxy in front of a store that delays each request by `delayMs` and records its span. */
export async function delayingStoreProxy(
  target: string,
  delayMs: number,
): Promise<{ endpoint: string; spans: Span[]; close: () => void }> {
  const spans: Span[] = [];
  const to = new URL(target);
  const server = createHttpServer((req, res) => {
    const op = String(req.headers['x-amz-target'] ?? '?')
      .split('.')
      .pop() as string;
    const span: Span = { op, start: performance.now(), end: Number.NaN };
    spans.push(span);
    const body: Buffer[] = [];
    req.on('data', (c: Buffer) => body.push(c));
    req.on('end', () => {
      setTimeout(() => {
        const up = httpRequest(
          { host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers },
          (r) => {
            res.writeHead(r.statusCode ?? 502, r.headers);
            r.pipe(res);
            r.on('end', () => {
              span.end = performance.now();
            });
          },
        );
        up.on('error', () => res.destroy());
        up.end(Buffer.concat(body));
      }, delayMs);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    close: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}

/**
 * The longest chain of spans each starting after the one before it ended: how many round trips
 * a request waited for one after another (greedy by end time gives the longest such chain).
 */
export function sequentialOf(spans: Span[]): number {
  let n = 0;
  let last = Number.NEGATIVE_INFINITY;
  for (const s of [...spans].sort((a, b) => a.end - b.end)) {
    if (s.start >= last) {
      n++;
      last = s.end;
    }
  }
  return n;
}

/** Round trips of one kind of request: per request, the total and the sequential count. */
export interface Trips {
  total: number[];
  sequential: number[];
  /** Requests by operation over all samples (e.g. `GetItem: 3, UpdateItem: 9`). */
  ops: Record<string, number>;
}

const policy = (region: string): RegistrationPolicy => ({
  relayHost: `relay.${region}.example`,
  relayPort: 8899,
  region,
});

/**
 * Counts store round trips per PUT, GET and CONNECT (one region) and per away-region PUT (two),
 * `samples` requests of each, with `delayMs` added to every store request.
 */
export async function countStoreTrips(
  samples: number,
  delayMs = 20,
): Promise<{
  put: Trips;
  putAgain: Trips;
  putProof: Trips;
  get: Trips;
  connect: Trips;
  awayPut: Trips & { local: Trips };
}> {
  const TABLE = 'rendezvous-trips';
  const servers = [await startStoreServer({ port: 0 }), await startStoreServer({ port: 0 })];
  const [homeServer, awayServer] = servers as [(typeof servers)[0], (typeof servers)[0]];
  const homeProxy = await delayingStoreProxy(homeServer.endpoint, delayMs);
  const awayProxy = await delayingStoreProxy(awayServer.endpoint, delayMs);
  // Direct stores to set up (not counted); counted stores through the proxies.
  const homeDirect = new Store({ table: TABLE, endpoint: homeServer.endpoint, region: 'eu-west-1' });
  const awayDirect = new Store({ table: TABLE, endpoint: awayServer.endpoint, region: 'us-east-1' });
  await homeDirect.ensureTable();
  await awayDirect.ensureTable();
  const home = new Store({ table: TABLE, endpoint: homeProxy.endpoint, region: 'eu-west-1' });
  const away = new Store({ table: TABLE, endpoint: awayProxy.endpoint, region: 'us-east-1' });
  const put = makeRegisterHandler(() => ({ store: home, policy: policy('eu-west-1') }));
  const putAway = makeRegisterHandler(() => ({ store: away, policy: policy('us-east-1'), home }));
  const get = makeLookupHandler(() => ({ store: home }));

  const empty = (): Trips => ({ total: [], sequential: [], ops: {} });
  const result = {
    put: empty(),
    putAgain: empty(),
    putProof: empty(),
    get: empty(),
    connect: empty(),
    awayPut: { ...empty(), local: empty() },
  };
  /** Runs `fn` alone and records the spans it caused at `proxy` into `into`. */
  const measure = async (
    fns: () => Promise<void>,
    proxies: Array<[{ spans: Span[] }, Trips]>,
  ): Promise<void> => {
    for (const [p] of proxies) p.spans.length = 0;
    await fns();
    for (const [p, into] of proxies) {
      into.total.push(p.spans.length);
      into.sequential.push(sequentialOf(p.spans));
      for (const s of p.spans) into.ops[s.op] = (into.ops[s.op] ?? 0) + 1;
    }
  };
  // A warm-up request per store, so the SDK's connection set-up is not counted as time.
  await home.getIdentity('warm-up');
  await away.getIdentity('warm-up');

  const stamp = Date.now();
  try {
    for (let i = 0; i < samples; i++) {
      const uuid = `trips-${stamp}-${i}`;
      const id = await provisionIdentity(homeDirect, { uuid });
      // The same identity on the other replica, as replication would have put it there.
      await awayDirect.createIdentity((await homeDirect.getIdentity(uuid)) as Identity);
      await measure(async () => {
        const r = await put(apiEvent('PUT', { uuid, response: currentCode(id) }, '10.1.0.1'));
        if (r.statusCode !== 200) throw new Error(`PUT ${r.statusCode} ${r.body}`);
      }, [[homeProxy, result.put]]);
      // Again from the address that registered it (the agent's next registration): the next
      // step's code, accepted within the ±1 step window.
      await measure(async () => {
        const next = codeForStep(id, timeStep(id, Date.now()) + 1);
        const r = await put(apiEvent('PUT', { uuid, response: next }, '10.1.0.1'));
        if (r.statusCode !== 200) throw new Error(`PUT again ${r.statusCode} ${r.body}`);
      }, [[homeProxy, result.putAgain]]);
      // A one-time proof (what the project's agent sends), on a fresh identity.
      const proofUuid = `trips-proof-${stamp}-${i}`;
      const proofId = await provisionIdentity(homeDirect, { uuid: proofUuid });
      await measure(async () => {
        const proof = proofForStep(proofId, proofUuid, timeStep(proofId, Date.now()));
        const r = await put(apiEvent('PUT', { uuid: proofUuid, response: proof }, '10.1.0.2'));
        if (r.statusCode !== 200) throw new Error(`PUT proof ${r.statusCode} ${r.body}`);
      }, [[homeProxy, result.putProof]]);
      await measure(async () => {
        const r = await get(apiEvent('GET', { uuid }));
        if (r.statusCode !== 200) throw new Error(`GET ${r.statusCode} ${r.body}`);
      }, [[homeProxy, result.get]]);

      // The away region: registration written to its replica, codes claimed on the home one.
      const awayUuid = `trips-away-${stamp}-${i}`;
      const awayId = await provisionIdentity(homeDirect, { uuid: awayUuid });
      await awayDirect.createIdentity((await homeDirect.getIdentity(awayUuid)) as Identity);
      await measure(async () => {
        const r = await putAway(
          apiEvent('PUT', { uuid: awayUuid, response: currentCode(awayId) }, '10.2.0.1'),
        );
        if (r.statusCode !== 200) throw new Error(`away PUT ${r.statusCode} ${r.body}`);
      }, [
        [homeProxy, result.awayPut],
        [awayProxy, result.awayPut.local],
      ]);

      // CONNECT (the relay's HTTP-specific auth) with a fresh code, on a fresh identity.
      const connUuid = `trips-conn-${stamp}-${i}`;
      const connId = await provisionIdentity(homeDirect, { uuid: connUuid });
      await measure(async () => {
        await authenticateConnect(
          home,
          {},
          connUuid,
          { response: currentCode(connId), source: '10.3.0.1' },
          async () => false,
        );
      }, [[homeProxy, result.connect]]);
    }
  } finally {
    for (const s of [home, away, homeDirect, awayDirect]) s.close();
    homeProxy.close();
    awayProxy.close();
    for (const s of servers) await s.close();
  }
  return result;
}
