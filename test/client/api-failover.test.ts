/**
 * Several registration API URLs (issue 18, one per region): the agent, the mobile client and the
 * library try them in order from the last that answered, fail over when one does not answer or
 * answers 5xx, and never on a definite answer — a refused code is not tried in another region.
 * Real APIs (the local adapter over the Lambda handlers) on 127.0.0.1; one is down or stops.
 */
import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiUrlList, lookupWithApi, registerWithApi } from '../../client/api.js';
import { isRendezvousError } from '../../core/errors.js';
import { codeForStep, timeStep } from '../../core/totp.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { connect, createHiddenServer, type HiddenServer } from '../../index.js';
import { startApiAdapter } from '../../local/api-adapter.js';
import type { LocalStack } from '../../local/stack.js';
import type { RegistrationPolicy } from '../../server/register.js';
import { runCli } from '../support/cli.js';
import { closedPort, readAll, sha256 } from '../support/net.js';
import { provision, startStack } from '../support/stack.js';

let stack: LocalStack;
const closers: Array<() => unknown> = [];

beforeAll(async () => {
  stack = await startStack({
    // Revocations reach parked sockets quickly, so an agent is made to register again mid-test.
    relay: { pairWaitMs: 1_500, revalidateMs: 200 },
  });
});
afterAll(async () => {
  for (const c of closers.reverse()) await c();
  await stack?.close();
});

/** Another region's API in front of the same table and relay: the adapter over the same handlers. */
async function regionApi() {
  const policy: RegistrationPolicy = {
    relayHost: '127.0.0.1',
    relayPort: stack.relayPort,
    region: 'local',
    maxFailuresPerSource: 50,
  };
  const api = await startApiAdapter({
    register: makeRegisterHandler(() => ({ store: stack.store, policy })),
    lookup: makeLookupHandler(() => ({ store: stack.store })),
    port: 0,
  });
  closers.push(() => api.close());
  return api;
}

/** An API that accepts connections and resets them at once, counting them. */
async function resettingApi(): Promise<{ url: string; hits: () => number }> {
  let hits = 0;
  const server: Server = createServer((s) => {
    hits++;
    s.resetAndDestroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(() => new Promise((r) => server.close(r)));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, hits: () => hits };
}

/** An API answering every request with `status` (JSON error body), counting them. */
async function answeringApi(status: number): Promise<{ url: string; hits: () => number }> {
  let hits = 0;
  const server: HttpServer = createHttpServer((_req, res) => {
    hits++;
    res.writeHead(status, { 'content-type': 'application/json', 'retry-after': '1' });
    res.end(JSON.stringify({ error: { permanent: false, diagnostic: `stub ${status}` } }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(() => new Promise((r) => server.close(() => r(undefined))));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, hits: () => hits };
}

function listen(server: HiddenServer): Promise<void> {
  closers.push(() => server.close());
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(() => resolve());
  });
}

async function echoThrough(api: string[] | string, uuid: string): Promise<void> {
  const socket = await connect({ api, uuid });
  const payload = randomBytes(64 * 1024);
  const back = readAll(socket);
  socket.end(payload);
  expect(sha256(await back)).toBe(sha256(payload));
}

describe('several API URLs (issue 18)', () => {
  it('parses lists: arrays, comma-separated strings, blanks and repeats; rejects what is no URL', () => {
    expect(apiUrlList('http://a/, http://b/,,http://a/')).toEqual(['http://a/', 'http://b/']);
    expect(apiUrlList(['http://a/,http://c/', 'https://b/'])).toEqual([
      'http://a/',
      'http://c/',
      'https://b/',
    ]);
    expect(() => apiUrlList(' , ')).toThrow(/no registration API URL/);
    expect(() => apiUrlList('http://a/,ftp://b/')).toThrow(/not an http\(s\) URL: ftp:\/\/b\//);
  });

  it('an API that does not answer is skipped, and the one that answered is tried first afterwards', async () => {
    const down = await resettingApi();
    const b = await regionApi();
    const apis = [down.url, b.url];
    const id = await provision(stack, { uuid: 'fo-skip' });
    await listen(createHiddenServer({ api: apis, uuid: 'fo-skip', secret: id.secret }, (s) => s.pipe(s)));
    expect(down.hits()).toBe(1);
    for (let i = 0; i < 3; i++) await echoThrough(apis, 'fo-skip');
    // The agent's registration found the way; the look-ups went straight to the region that answers.
    expect(down.hits()).toBe(1);
    // A comma-separated string is the same list (RENDEZVOUS_API's form).
    await echoThrough(apis.join(','), 'fo-skip');
  });

  it('a refused connection and a 5xx fail over; the last URL that fails is the error reported', async () => {
    const refused = `http://127.0.0.1:${await closedPort()}/`;
    const unavailable = await answeringApi(503);
    const id = await provision(stack, { uuid: 'fo-5xx' });
    await listen(
      createHiddenServer(
        { api: `${refused},${unavailable.url},${stack.apiUrl}`, uuid: 'fo-5xx', secret: id.secret },
        (s) => s.pipe(s),
      ),
    );
    await echoThrough([unavailable.url, refused, stack.apiUrl], 'fo-5xx');
    expect(unavailable.hits()).toBe(2);
    const err = await lookupWithApi([refused, unavailable.url], 'fo-5xx').catch((e) => e);
    expect(isRendezvousError(err, 'UNREACHABLE')).toBe(true);
    expect(err.message).toBe('stub 503');
  });

  it('a refused code, an unregistered uuid and other 4xx answers are final: no other region is asked', async () => {
    const other = await answeringApi(200);
    const id = await provision(stack, { uuid: 'fo-final' });
    const step = timeStep(id, Date.now());
    const wrong = codeForStep(id, step + 5);
    const refused = await registerWithApi([stack.apiUrl, other.url], 'fo-final', wrong).catch((e) => e);
    expect(isRendezvousError(refused, 'AUTH_FAILED')).toBe(true);
    const unregistered = await lookupWithApi([stack.apiUrl, other.url], 'fo-final').catch((e) => e);
    expect(isRendezvousError(unregistered, 'NOT_REGISTERED')).toBe(true);
    const forbidden = await answeringApi(403);
    const denied = await lookupWithApi([forbidden.url, other.url], 'fo-final').catch((e) => e);
    expect(denied.message).toBe('stub 403');
    expect(other.hits()).toBe(0);
    // The valid code was not burnt by any of this: it registers (once).
    await expect(
      registerWithApi([stack.apiUrl, other.url], 'fo-final', codeForStep(id, step)),
    ).resolves.toMatchObject({
      port: stack.relayPort,
    });
  });

  it('the CLI takes --api repeated or comma-separated, and RENDEZVOUS_API comma-separated', async () => {
    const down = `http://127.0.0.1:${await closedPort()}/`;
    const id = await provision(stack, { uuid: 'fo-cli' });
    await listen(
      createHiddenServer({ api: stack.apiUrl, uuid: 'fo-cli', secret: id.secret }, (s) => s.pipe(s)),
    );
    const repeated = await runCli(
      ['connect', '--uuid', 'fo-cli', '--api', down, '--api', stack.apiUrl],
      {},
      'one',
    );
    expect(repeated.stderr).toBe('');
    expect(repeated.stdout.toString()).toBe('one');
    const commas = await runCli(
      ['connect', '--uuid', 'fo-cli', '--api', `${down},${stack.apiUrl}`],
      {},
      'two',
    );
    expect(commas.stdout.toString()).toBe('two');
    const fromEnv = await runCli(
      ['connect', '--uuid', 'fo-cli'],
      { RENDEZVOUS_API: `${down}, ${stack.apiUrl}` },
      'three',
    );
    expect(fromEnv.stdout.toString()).toBe('three');
    const bad = await runCli(['connect', '--uuid', 'fo-cli', '--api', `${stack.apiUrl},nope`], {}, '');
    expect(bad.code).toBe(2); // a usage error (issue 15)
    expect(bad.stderr).toMatch(/not an http\(s\) URL: nope/);
  });

  it('an API that stops mid-way: the agent registers again through the other, mobiles follow', async () => {
    const a = await regionApi();
    const b = await regionApi();
    const apis = [a.url, b.url];
    const id = await provision(stack, { uuid: 'fo-midway' });
    const server = createHiddenServer(
      { api: apis, uuid: 'fo-midway', secret: id.secret, backoff: { minMs: 50, maxMs: 500 } },
      (s) => s.pipe(s),
    );
    let registrations = 0;
    server.on('registered', () => registrations++);
    await listen(server);
    await echoThrough(apis, 'fo-midway');
    expect(registrations).toBe(1);
    await a.close();
    // Make the agent register again: revoking its registration gets its park refused.
    await stack.store.deleteRegistration('fo-midway');
    const until = Date.now() + 20_000;
    while (registrations < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(registrations).toBe(2);
    await echoThrough(apis, 'fo-midway');
  });
});
