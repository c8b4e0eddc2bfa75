/**
 * The whole local stack in-process on 127.0.0.1: store, API adapter, relay, the agent and the
 * mobile client, over real sockets.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HiddenServer } from '../../client/hidden-server.js';
import { connect as connectToHiddenServer } from '../../client/mobile.js';
import { codeForStep, currentCode, timeStep } from '../../core/totp.js';
import type { LocalStack } from '../../local/stack.js';
import { mobileCookieFor } from '../../server/cookies.js';
import type { ProvisionedIdentity } from '../../server/identities.js';
import { closedWithin, dial, rawExchange, readAll, sha256, startEchoServer } from '../support/net.js';
import { expose, provision, startStack } from '../support/stack.js';
import { waitFor as waitUntil } from '../support/wait.js';

let stack: LocalStack;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
let id: ProvisionedIdentity;
let agent: HiddenServer;

const HANDSHAKE_MS = 400;

beforeAll(async () => {
  stack = await startStack({
    relay: { handshakeTimeoutMs: HANDSHAKE_MS, pairWaitMs: 2_000, revalidateMs: 200 },
  });
  echo = await startEchoServer();
  id = await provision(stack, { uuid: 'echo-server' });
  agent = expose(stack, { uuid: id.uuid, secret: id.otpauth }, echo.port, { pool: 2 });
  await new Promise((r) => agent.once('parked', r));
});

afterAll(async () => {
  agent?.stop();
  await echo?.close();
  await stack?.close();
});

interface ApiBody {
  result: { host: string; port: number; cookie: string };
  error: { permanent: boolean; diagnostic: string };
}

async function api(method: string, query: string) {
  const res = await fetch(`${stack.apiUrl}/?${query}`, { method });
  return { status: res.status, headers: res.headers, body: (await res.json()) as ApiBody };
}

describe('generic protocol end to end', () => {
  it('round-trips 1 MiB of random bytes each way through the relay, sha256-equal', async () => {
    const socket = await connectToHiddenServer({ api: stack.apiUrl, uuid: id.uuid });
    const payload = randomBytes(1 << 20);
    const received = readAll(socket);
    socket.end(payload);
    const back = await received;
    expect(back.length).toBe(payload.length);
    expect(sha256(back)).toBe(sha256(payload));
  });

  it('keeps several rendezvous apart at once (the agent re-parks after each +OK)', async () => {
    const payloads = Array.from({ length: 6 }, () => randomBytes(64 * 1024));
    const results = await Promise.all(
      payloads.map(async (p) => {
        const s = await connectToHiddenServer({ api: stack.apiUrl, uuid: id.uuid });
        const r = readAll(s);
        s.end(p);
        return r;
      }),
    );
    expect(results.map(sha256)).toEqual(payloads.map(sha256));
  });

  it('forwards bytes the mobile client sent right after its cookie line', async () => {
    const l = await api('GET', `uuid=${id.uuid}`);
    const s = await dial(stack.relayPort);
    const all = readAll(s);
    s.end(`${l.body.result.cookie}\nearly bytes`);
    expect((await all).toString()).toBe('+OK\nearly bytes');
  });

  it('propagates a close from the mobile side to the hidden side', async () => {
    // A hidden server that parks by hand, so its socket can be watched.
    const hidden = await parkByHand();
    const mobile = await connectToHiddenServer({ api: stack.apiUrl, uuid: 'manual' });
    const hiddenSaw = readAll(hidden.socket);
    mobile.end('bye');
    expect((await hiddenSaw).toString()).toBe('+OK\nbye');
    hidden.socket.end();
    await closedWithin(mobile, 2_000);
  });

  it('propagates a close from the hidden side to the mobile side, data in flight included', async () => {
    const hidden = await parkByHand();
    const mobile = await connectToHiddenServer({ api: stack.apiUrl, uuid: 'manual' });
    const mobileSaw = readAll(mobile);
    await new Promise((r) => hidden.socket.once('data', r)); // +OK
    const tail = randomBytes(256 * 1024);
    hidden.socket.end(tail);
    const got = await mobileSaw;
    expect(sha256(got)).toBe(sha256(tail));
    mobile.end();
    await closedWithin(hidden.socket, 2_000);
  });

  it('destroys the other side when one side resets', async () => {
    const hidden = await parkByHand();
    const mobile = await connectToHiddenServer({ api: stack.apiUrl, uuid: 'manual' });
    mobile.on('error', () => {});
    hidden.socket.resetAndDestroy();
    await closedWithin(mobile, 2_000);
  });
});

let manualStep = 0;
/** Registers uuid "manual" once and parks one raw `R` socket. */
async function parkByHand() {
  if (!manualStep) {
    const manual = await provision(stack, { uuid: 'manual' });
    manualStep = timeStep(manual, Date.now());
    const r = await api('PUT', `uuid=manual&response=${codeForStep(manual, manualStep)}`);
    expect(r.status).toBe(200);
    manualCookie = r.body.result.cookie;
  }
  const socket = await dial(stack.relayPort);
  socket.write(`${manualCookie}\n`);
  await waitFor(() => stack.relay.lot.keys('generic').includes(mobileCookieFor(manualCookie.slice(1))));
  return { socket };
}
let manualCookie = '';

/** Waits for the relay to see a park; 10 s, not 2, so a busy machine is not taken for a failure. */
const waitFor = (cond: () => boolean, ms = 10_000) => waitUntil(cond, ms, 'condition not met in time');

describe('bad inputs on the wire', () => {
  it('API: wrong code 401, unknown uuid 401 with the same body, replay 401', async () => {
    const other = await provision(stack, { uuid: 'api-checks' });
    const code = currentCode(other);
    const wrong = String((Number(code) + 1) % 1_000_000).padStart(6, '0');
    const a = await api('PUT', `uuid=api-checks&response=${wrong}`);
    const b = await api('PUT', `uuid=no-such-uuid&response=${code}`);
    expect([a.status, b.status]).toEqual([401, 401]);
    expect(a.body).toEqual(b.body);
    expect((await api('PUT', `uuid=api-checks&response=${code}`)).status).toBe(200);
    const replay = await api('PUT', `uuid=api-checks&response=${code}`);
    expect(replay.status).toBe(401);
    expect(replay.body).toEqual({ error: { permanent: true, diagnostic: 'authentication failed' } });
  });

  it('API: missing uuid 400, wrong method 405 with Allow, unregistered lookup 404', async () => {
    const missing = await api('PUT', 'response=123456');
    expect(missing.status).toBe(400);
    expect(missing.body.error.diagnostic).toBe('missing parameter: uuid');
    const post = await api('POST', 'uuid=x');
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, PUT');
    await provision(stack, { uuid: 'not-registered' });
    const l = await api('GET', 'uuid=not-registered');
    expect(l.status).toBe(404);
    expect(l.body.error).toEqual({ permanent: false, diagnostic: 'hidden server not registered' });
  });

  it('relay: an unknown cookie gets -ERR and a close', async () => {
    const r = await rawExchange(stack.relayPort, 'IAAAAAAAAAAAAAAAAAAAAAAA\n');
    expect(r).toMatchObject({ text: '-ERR unknown cookie\n', closed: true });
    const h = await rawExchange(stack.relayPort, 'RAAAAAAAAAAAAAAAAAAAAAAA\n');
    expect(h).toMatchObject({ text: '-ERR unknown cookie\n', closed: true });
  });

  it('relay: a cookie line over the limit without a newline gets -ERR and a close', async () => {
    const r = await rawExchange(stack.relayPort, Buffer.alloc(200, 0x49));
    expect(r).toMatchObject({ text: '-ERR line too long\n', closed: true });
  });

  it('relay: a malformed line gets -ERR and a close', async () => {
    const r = await rawExchange(stack.relayPort, 'GET / HTTP/1.1\r\n');
    expect(r).toMatchObject({ text: '-ERR malformed cookie line\n', closed: true });
  });

  it('relay: a silent socket is closed at the handshake deadline', async () => {
    const r = await rawExchange(stack.relayPort, null, HANDSHAKE_MS + 3_000);
    expect(r.closed).toBe(true);
    expect(r.text).toBe('-ERR handshake timeout\n');
    expect(r.ms).toBeGreaterThanOrEqual(HANDSHAKE_MS - 50);
  });

  it('relay: a mobile client with no hidden server parked gets -ERR after the wait', async () => {
    const lonely = await provision(stack, { uuid: 'lonely' });
    const reg = await api('PUT', `uuid=lonely&response=${currentCode(lonely)}`);
    const r = await rawExchange(
      stack.relayPort,
      `I${mobileCookieFor(reg.body.result.cookie.slice(1))}\n`,
      5_000,
    );
    expect(r).toMatchObject({ text: '-ERR no hidden server parked for this cookie\n', closed: true });
  });

  it('relay: a new registration tells sockets parked with the old cookie -ERR', async () => {
    const rot = await provision(stack, { uuid: 'rotating' });
    const step = timeStep(rot, Date.now());
    const first = await api('PUT', `uuid=rotating&response=${codeForStep(rot, step)}`);
    const parked = await dial(stack.relayPort);
    parked.write(`${first.body.result.cookie}\n`);
    const saw = readAll(parked);
    await waitFor(() =>
      stack.relay.lot.keys('generic').includes(mobileCookieFor(first.body.result.cookie.slice(1))),
    );
    const second = await api('PUT', `uuid=rotating&response=${codeForStep(rot, step + 1)}`);
    expect(second.status).toBe(200);
    expect((await saw).toString()).toBe('-ERR cookie replaced by a newer registration\n');
    // The old mobile cookie is refused too.
    const old = await rawExchange(
      stack.relayPort,
      `I${mobileCookieFor(first.body.result.cookie.slice(1))}\n`,
    );
    expect(old.text).toMatch(/^-ERR (unknown cookie|cookie replaced)/);
  });

  it('relay: a bad peer does not disturb a rendezvous running next to it', async () => {
    const s = await connectToHiddenServer({ api: stack.apiUrl, uuid: id.uuid });
    const got = readAll(s);
    s.write('first half,');
    await rawExchange(stack.relayPort, Buffer.alloc(5000, 0));
    await rawExchange(stack.relayPort, '\x00\x01\x02\n');
    s.end('second half');
    expect((await got).toString()).toBe('first half,second half');
  });
});
