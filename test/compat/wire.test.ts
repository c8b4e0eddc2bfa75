/**
 * The compatibility suite: an identity imported (with the real `rendezvous import` command) from
 * an original-shaped record, driven by clients written to the original's behaviour — raw sockets
 * speaking `R`/`I` lines, raw CONNECTs, curl as the HTTP mobile — on the real clock. Each case
 * sets what the original answered (the model, from the facts file) beside ours: equal where the
 * migration guide (docs/migrating.md) says the wire is the same, and otherwise a difference it
 * lists with its reason.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importIdentities } from '../../cli/import/import.js';
import { currentCode } from '../../core/totp.js';
import { provisionIdentity } from '../../server/identities.js';
import { runCli } from '../support/cli.js';
import { startCluster } from '../support/cluster.js';
import { dial, rawExchange } from '../support/net.js';
import {
  ORIGINAL_API,
  ORIGINAL_RELAY,
  originalAsciiSecret,
  originalCode,
  originalRecord,
  stepAt,
} from './original-model.js';

const run = promisify(execFile);
/** The migration guide, whose differences table lists every way the wire differs from the original. */
const differences = readFileSync(new URL('../../docs/migrating.md', import.meta.url), 'utf8');

let cluster: Awaited<ReturnType<typeof startCluster>>;
let httpPort: number;
let relayPort: number;
/** An imported identity (through the CLI); the first case gives it a secret whose code now has 8 digits. */
let eight: { uuid: string; secret: string };
/** Another imported identity, for the HTTP-specific protocol. */
let web: { uuid: string; secret: string };

interface ApiBody {
  result?: { host: string; port: number; cookie: string };
  error?: { permanent: boolean; diagnostic: string };
}

async function api(method: string, query: string) {
  const res = await fetch(`${cluster.apiUrl}/?${query}`, { method });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: (text ? JSON.parse(text) : {}) as ApiBody };
}

/** Asserts the migration guide lists a difference from the original, by its key phrase. */
function listedDifference(phrase: string) {
  expect(differences.toLowerCase(), `docs/migrating.md difference: ${phrase}`).toContain(
    phrase.toLowerCase(),
  );
}

/** Waits until a step starts with at least `ms` to go in it. */
async function roomInStep(ms: number) {
  const left = 30_000 - (Date.now() % 30_000);
  if (left < ms) await new Promise((r) => setTimeout(r, left + 50));
}

/** A secret (ASCII, as the original minted) whose code now has `digits` digits, with room left in the step. */
async function secretWithDigitsNow(digits: number) {
  await roomInStep(8_000);
  const step = stepAt(Date.now());
  for (;;) {
    const secret = originalAsciiSecret();
    if (originalCode(secret, step).length === digits) return { secret, step };
  }
}

const importEnv = () => ({
  AWS_ENDPOINT_URL_DYNAMODB: cluster.storeEndpoint,
  AWS_REGION: 'local',
  RENDEZVOUS_TABLE: cluster.store.table,
});

beforeAll(async () => {
  // Every client here comes from 127.0.0.1: lift the per-source guess budget so the wrong codes
  // some cases send on purpose do not turn later cases into 429s.
  const limits = { maxFailures: 1_000, maxFailuresPerSource: 1_000 };
  cluster = await startCluster(1, { relay: { pairWaitMs: 400, connectPolicy: limits }, policy: limits });
  httpPort = cluster.relays[0]?.httpAddress?.port as number;
  relayPort = cluster.relays[0]?.address.port as number;
  eight = { uuid: 'orig-eight', secret: originalAsciiSecret() };
  web = { uuid: 'orig-web', secret: originalAsciiSecret() };
  // The shape the original's redis holds: uuid → JSON string; imported through stdin.
  const dump = JSON.stringify({
    [eight.uuid]: originalRecord(eight.uuid, eight.secret),
    [web.uuid]: originalRecord(web.uuid, web.secret),
  });
  const out = await runCli(['import'], importEnv(), dump);
  expect(out.stderr).toBe('');
  expect(out.code).toBe(0);
  expect(out.stdout.toString()).toMatch(/^imported 2, unchanged 0/);
}, 60_000);

afterAll(async () => cluster?.close());

/** Reads from `s` until `want` bytes (latin1) have arrived. */
function readUntil(s: Socket, pred: (text: string) => boolean, ms = 3_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const t = setTimeout(() => {
      s.off('data', onData);
      reject(new Error(`timed out; saw ${JSON.stringify(text)}`));
    }, ms);
    const onData = (c: Buffer) => {
      text += c.toString('latin1');
      if (pred(text)) {
        clearTimeout(t);
        s.off('data', onData);
        resolve(text);
      }
    };
    s.on('data', onData);
  });
}

describe('registration API, imported identity, original client', () => {
  it('an 8-digit code computed the original way registers (same wire: 200 {"result":{host,port,cookie:"R…"}})', async () => {
    // About 1 step in 24 has an 8-digit value: pick a secret whose code has 8 digits now (with
    // room left in the step) and re-import the record with it, as an operator's --force would.
    const found = await secretWithDigitsNow(8);
    const report = await importIdentities(cluster.store, originalRecord(eight.uuid, found.secret), {
      force: true,
    });
    expect(report.replaced).toEqual([eight.uuid]);
    eight.secret = found.secret;
    const code = originalCode(eight.secret, found.step);
    expect(code).toHaveLength(8);
    const res = await api('PUT', `uuid=${eight.uuid}&response=${code}`);
    expect(res.status).toBe(ORIGINAL_API.validPut.status);
    expect(res.body.result?.cookie).toMatch(ORIGINAL_API.validPut.body.result.cookie);
    // The seed's three fields, plus one additive key (listed): the relay's cookie-line options.
    expect(Object.keys(res.body.result ?? {}).sort()).toEqual(['cookie', 'host', 'port', 'relayOptions']);
    listedDifference('relayOptions');
    // The original sent no Content-Type; ours says application/json (listed).
    expect(res.headers.get('content-type')).toBe('application/json');
    listedDifference('Content-Type');
  });

  it('the same code again within its step: 200 with a new cookie (the original semantics)', async () => {
    await roomInStep(5_000);
    const code = originalCode(eight.secret, stepAt(Date.now()));
    const a = await api('PUT', `uuid=${eight.uuid}&response=${code}`);
    const b = await api('PUT', `uuid=${eight.uuid}&response=${code}`);
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(ORIGINAL_API.reusedCodeInStep.newCookie).toBe(true);
    expect(b.body.result?.cookie).not.toBe(a.body.result?.cookie);
  });

  it('an RFC 6238 6-digit code of the same secret registers: for an ASCII secret it is the original`s 6-digit code', async () => {
    const { rfcCode } = await import('./original-model.js');
    await roomInStep(3_000);
    const step = stepAt(Date.now());
    expect(rfcCode(eight.secret, step)).toBe(originalCode(eight.secret, step, 6));
    const res = await api('PUT', `uuid=${eight.uuid}&response=${rfcCode(eight.secret, step)}`);
    expect(res.status).toBe(200);
  });

  it('the look-up of a registered uuid: 200 {"result":{…,"cookie":"I…"}}; our I cookie is not R`s body (listed)', async () => {
    const put = await api(
      'PUT',
      `uuid=${eight.uuid}&response=${originalCode(eight.secret, stepAt(Date.now()))}`,
    );
    const get = await api('GET', `uuid=${eight.uuid}`);
    expect(get.status).toBe(ORIGINAL_API.lookupRegistered.status);
    expect(get.body.result?.cookie).toMatch(ORIGINAL_API.lookupRegistered.body.result.cookie);
    // The original answered I<same>; ours is derived one-way from R's (issue 12).
    expect(get.body.result?.cookie.slice(1)).not.toBe(put.body.result?.cookie.slice(1));
    listedDifference('I cookie');
  });

  it('bad code: 200 "invalid request" as the original; an unknown uuid: 401 (listed)', async () => {
    const bad = await api('PUT', `uuid=${eight.uuid}&response=12345678`);
    expect(bad.status).toBe(ORIGINAL_API.badCode.status);
    expect(bad.body).toEqual(ORIGINAL_API.badCode.body);
    const unknown = await api('PUT', 'uuid=orig-nobody&response=12345678');
    expect(ORIGINAL_API.unknownUuid.status).toBe(200);
    expect(unknown.status).toBe(401);
    expect(unknown.body.error?.diagnostic).toBe('authentication failed');
    listedDifference('invalid request');
  });

  it('look-up of an unregistered uuid: original 200 "not registered"; ours 404 (listed)', async () => {
    const res = await api('GET', 'uuid=orig-nobody');
    expect(ORIGINAL_API.lookupUnregistered.status).toBe(200);
    expect(res.status).toBe(404);
    expect(res.body.error?.diagnostic).toContain('not registered');
    listedDifference('not registered');
  });

  it('missing uuid: original 404, ours 400 (listed); wrong method: 405 with Allow in both', async () => {
    const missing = await api('PUT', 'response=12345678');
    expect(ORIGINAL_API.missingUuid.status).toBe(404);
    expect(missing.status).toBe(400);
    listedDifference('missing uuid');
    const otherPath = await fetch(
      `${cluster.apiUrl}/register?uuid=${eight.uuid}&response=${originalCode(eight.secret, stepAt(Date.now()))}`,
      { method: 'PUT' },
    );
    // Any path, as on the original: only the query is read.
    expect(otherPath.status).toBe(200);
    // A 5-digit value (1 step in ~21,000): the original hung; we answer "invalid request" at once.
    const short = await api('PUT', `uuid=${eight.uuid}&response=12345`);
    expect(short).toMatchObject({ status: 200, body: ORIGINAL_API.badCode.body });
    listedDifference('1–5 digits');
    const wrong = await api('POST', `uuid=${eight.uuid}`);
    expect(wrong.status).toBe(ORIGINAL_API.wrongMethod.status);
    expect(wrong.headers.get('allow')).toBeTruthy();
  });
});

describe('generic relay, raw sockets speaking R/I lines', () => {
  it('serves a rendezvous: +OK to both, bytes after the I line reach the hidden side after its +OK, FIN forwarded', async () => {
    const put = await api(
      'PUT',
      `uuid=${eight.uuid}&response=${originalCode(eight.secret, stepAt(Date.now()))}`,
    );
    expect(put.status).toBe(200);
    const get = await api('GET', `uuid=${eight.uuid}`);
    const hidden = await dial(put.body.result?.port as number);
    hidden.write(`${put.body.result?.cookie}\n`);
    await new Promise((r) => setTimeout(r, 100));
    const mobile = await dial(get.body.result?.port as number);
    mobile.write(`${get.body.result?.cookie}\nhello hidden`);
    const seenByHidden = await readUntil(hidden, (t) => t.includes('hello hidden'));
    expect(seenByHidden).toBe(`${ORIGINAL_RELAY.paired}hello hidden`);
    hidden.write('hello mobile');
    hidden.end();
    const seenByMobile = await new Promise<string>((resolve) => {
      let text = '';
      mobile.on('data', (c) => {
        text += c.toString('latin1');
      });
      mobile.on('end', () => resolve(text));
    });
    expect(seenByMobile).toBe(`${ORIGINAL_RELAY.paired}hello mobile`);
    mobile.end();
    mobile.destroy();
    hidden.destroy();
  });

  it('the cookie does not expire by time (until the next registration, as in the original)', async () => {
    const reg = await cluster.store.getRegistrationRecord(eight.uuid);
    expect(reg?.expiresAt).toBeGreaterThan(Date.now() / 1000 + 50 * 365 * 86_400);
  });

  it('an I line with nothing parked: the original said -ERR not ready at once; ours waits for a park first (listed)', async () => {
    const put = await api(
      'PUT',
      `uuid=${eight.uuid}&response=${originalCode(eight.secret, stepAt(Date.now()))}`,
    );
    expect(put.status).toBe(200);
    const get = await api('GET', `uuid=${eight.uuid}`);
    const alone = await rawExchange(relayPort, `${get.body.result?.cookie}\n`, 3_000);
    expect(ORIGINAL_RELAY.nothingParked).toBe('-ERR not ready\n');
    expect(alone.text).toMatch(/^-ERR .+\n$/);
    expect(alone.closed).toBe(true);
    listedDifference('not ready');
  });

  it('a second R with the same cookie: the original closed the first; ours keeps both parked (listed)', async () => {
    const put = await api(
      'PUT',
      `uuid=${eight.uuid}&response=${originalCode(eight.secret, stepAt(Date.now()))}`,
    );
    const one = await dial(relayPort);
    one.write(`${put.body.result?.cookie}\n`);
    const two = await dial(relayPort);
    two.write(`${put.body.result?.cookie}\n`);
    const key = (await api('GET', `uuid=${eight.uuid}`)).body.result?.cookie.slice(1) as string;
    const until = Date.now() + 3_000;
    while ((cluster.relays[0]?.lot.count('generic', key) ?? 0) < 2 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(cluster.relays[0]?.lot.count('generic', key)).toBe(2);
    expect(one.destroyed).toBe(false);
    listedDifference('second `R`');
    one.destroy();
    two.destroy();
  });

  it('a new PUT ends the old cookie (same as the original): its parked socket is told -ERR', async () => {
    const step = stepAt(Date.now());
    const old = await api('PUT', `uuid=${eight.uuid}&response=${originalCode(eight.secret, step)}`);
    const parked = await dial(relayPort);
    parked.write(`${old.body.result?.cookie}\n`);
    await new Promise((r) => setTimeout(r, 150));
    const closed = readUntil(parked, (t) => t.startsWith('-ERR'), 5_000);
    const fresh = await api(
      'PUT',
      `uuid=${eight.uuid}&response=${originalCode(eight.secret, stepAt(Date.now()))}`,
    );
    // The original's client parks with its new cookie: the old one's socket is told -ERR then.
    const newer = await dial(relayPort);
    newer.write(`${fresh.body.result?.cookie}\n`);
    expect(await closed).toMatch(/^-ERR /);
    newer.destroy();
    parked.destroy();
    const replaced = await rawExchange(relayPort, `${old.body.result?.cookie}\n`, 3_000);
    expect(replaced.text).toMatch(/^-ERR /);
  });

  it('refusals: every -ERR line of the original has its counterpart; texts differ (listed)', async () => {
    const unknown = await rawExchange(relayPort, 'Inot-a-cookie-at-all-xxxxxx\n', 3_000);
    expect(unknown.text.startsWith('-ERR ')).toBe(true);
    expect(unknown.closed).toBe(true);
    const malformed = await rawExchange(relayPort, 'Xgarbage\n', 3_000);
    expect(malformed.text.startsWith('-ERR ')).toBe(true);
    // The original took a \r before the \n as part of the cookie (so: not registered); here it
    // is tolerated and the socket parks (listed).
    const put = await api(
      'PUT',
      `uuid=${eight.uuid}&response=${originalCode(eight.secret, stepAt(Date.now()))}`,
    );
    const cr = await rawExchange(relayPort, `${put.body.result?.cookie}\r\n`, 600);
    expect(cr).toMatchObject({ text: '', closed: false });
    listedDifference('\\r');
    expect([ORIGINAL_RELAY.unknownCookie, ORIGINAL_RELAY.malformedLine]).not.toContain(unknown.text);
    listedDifference('-ERR');
  });
});

/** Sends a raw CONNECT as the original's HTTP-specific hidden server and reads the answer head. */
async function originalConnect(code: string) {
  const s = await dial(httpPort);
  s.write(`CONNECT uuid:${web.uuid}?response=${code} HTTP/1.1\r\nHost: relay\r\n\r\n`);
  const head = await readUntil(s, (t) => t.includes('\r\n\r\n'));
  return { socket: s, head, status: Number(head.slice(9, 12)) };
}

/** Serves one forwarded request on a parked socket, as the original's hidden server would. */
function serveOnce(s: Socket, body: string): Promise<string> {
  return readUntil(s, (t) => t.includes('\r\n\r\n'), 10_000).then((req) => {
    s.end(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    return req;
  });
}

describe('HTTP-specific protocol: raw CONNECT as the hidden server, curl as the mobile', () => {
  it('parks with a code computed the original way, serves curl, re-parks with the same code and stays reachable', async () => {
    await roomInStep(15_000);
    const code = originalCode(web.secret, stepAt(Date.now()));
    const first = await originalConnect(code);
    expect(first.status).toBe(200);
    // The original answered `HTTP/1.1 200\r\n\r\n`; ours adds a reason and a Rendezvous-Cookie (listed).
    expect(first.head).toMatch(/^HTTP\/1\.1 200[ \r]/);
    listedDifference('Rendezvous-Cookie');

    const served = serveOnce(first.socket, 'first answer');
    const curl1 = await run('curl', [
      '-sS',
      '--max-time',
      '10',
      '-u',
      `${web.uuid}:pw`,
      `http://127.0.0.1:${httpPort}/one`,
    ]);
    expect(curl1.stdout).toBe('first answer');
    // The head is forwarded with Authorization removed, as in the original.
    expect((await served).toLowerCase()).not.toContain('authorization');

    // No park is left: the original's client re-parks with the current code — the same one.
    const again = await originalConnect(code);
    expect(again.status).toBe(200);
    const served2 = serveOnce(again.socket, 'second answer');
    const curl2 = await run('curl', [
      '-sS',
      '--max-time',
      '10',
      `http://127.0.0.1:${httpPort}/two?rendezvous=${web.uuid}`,
    ]);
    expect(curl2.stdout).toBe('second answer');
    await served2;
    // The original recognised ?rendezvous= only on Upgrade requests (listed).
    listedDifference('?rendezvous=');

    // Again, with Digest credentials naming the uuid (curl answers the relay's challenge).
    const third = await originalConnect(code);
    expect(third.status).toBe(200);
    const served3 = serveOnce(third.socket, 'third answer');
    const curl3 = await run('curl', [
      '-sS',
      '--max-time',
      '10',
      '--digest',
      '-u',
      `${web.uuid}:pw`,
      `http://127.0.0.1:${httpPort}/three`,
    ]);
    expect(curl3.stdout).toBe('third answer');
    expect((await served3).toLowerCase()).not.toContain('authorization');

    // And a WebSocket upgrade passes through: 101, then bytes both ways.
    const fourth = await originalConnect(code);
    expect(fourth.status).toBe(200);
    const mobile = await dial(httpPort);
    mobile.write(
      `GET /ws?rendezvous=${web.uuid} HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    );
    const upgradeHead = await readUntil(fourth.socket, (t) => t.includes('\r\n\r\n'), 10_000);
    expect(upgradeHead).toMatch(/^GET \/ws\?rendezvous=orig-web HTTP\/1\.1\r\n/);
    expect(upgradeHead.toLowerCase()).toContain('upgrade: websocket');
    fourth.socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nfrom-hidden',
    );
    expect(await readUntil(mobile, (t) => t.includes('from-hidden'))).toMatch(/^HTTP\/1\.1 101 /);
    mobile.write('from-mobile');
    expect(await readUntil(fourth.socket, (t) => t.includes('from-mobile'))).toBe('from-mobile');
    mobile.destroy();
    fourth.socket.destroy();
  });

  it('refusals keep the original`s statuses: 401 bad code, 407 no response, 403 not uuid:, 409 data before 200', async () => {
    const bad = await rawExchange(httpPort, `CONNECT uuid:${web.uuid}?response=123456789 HTTP/1.1\r\n\r\n`);
    expect(Number(bad.text.slice(9, 12))).toBe(ORIGINAL_RELAY.connectBadCode);
    // Same error JSON shape as the original, `permanent:false` for a compat identity's bad code;
    // 403, 407 and 409 say permanent:true (listed).
    const body = JSON.parse(bad.text.slice(bad.text.indexOf('\r\n\r\n') + 4));
    expect(body).toEqual({ error: { permanent: false, diagnostic: 'authentication failed' } });
    listedDifference('permanent:false');
    const none = await rawExchange(httpPort, `CONNECT uuid:${web.uuid} HTTP/1.1\r\n\r\n`);
    expect(Number(none.text.slice(9, 12))).toBe(ORIGINAL_RELAY.connectNoResponse);
    const notUuid = await rawExchange(httpPort, 'CONNECT example.com:443 HTTP/1.1\r\n\r\n');
    expect(Number(notUuid.text.slice(9, 12))).toBe(ORIGINAL_RELAY.connectNotUuid);
    await roomInStep(5_000);
    const early = await rawExchange(
      httpPort,
      `CONNECT uuid:${web.uuid}?response=${originalCode(web.secret, stepAt(Date.now()))} HTTP/1.1\r\n\r\nearly`,
    );
    expect(Number(early.text.slice(9, 12))).toBe(ORIGINAL_RELAY.connectEarlyData);
  });

  it('a mobile request naming an unknown uuid gets 404 (after the pairing wait here; listed)', async () => {
    const res = await run('curl', [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      `http://127.0.0.1:${httpPort}/?rendezvous=orig-nobody`,
    ]);
    expect(Number(res.stdout)).toBe(ORIGINAL_RELAY.mobileUnknownUuid);
    listedDifference('404');
  });
});

describe('strict identities are unchanged', () => {
  it('a replayed code is refused on PUT, and on CONNECT once its park is gone', async () => {
    await roomInStep(8_000);
    const strict = await provisionIdentity(cluster.store, { uuid: 'strict-one' });
    const code = currentCode(strict);
    expect((await api('PUT', `uuid=strict-one&response=${code}`)).status).toBe(200);
    expect((await api('PUT', `uuid=strict-one&response=${code}`)).status).toBe(401);

    const web2 = await provisionIdentity(cluster.store, { uuid: 'strict-web' });
    const c2 = currentCode(web2);
    const s = await dial(httpPort);
    s.write(`CONNECT uuid:strict-web?response=${c2} HTTP/1.1\r\n\r\n`);
    expect(await readUntil(s, (t) => t.includes('\r\n\r\n'))).toMatch(/^HTTP\/1\.1 200/);
    s.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const replay = await rawExchange(httpPort, `CONNECT uuid:strict-web?response=${c2} HTTP/1.1\r\n\r\n`);
    expect(Number(replay.text.slice(9, 12))).toBe(401);
  });
});
