/**
 * Acceptance (issue 25, code length): clients written to the original's behaviour, each
 * configured with its own code length — 6, 7 and 8 digits and the full unreduced value (`length`
 * 40) — share one identity imported with `rendezvous import` and left unchanged. Within one step,
 * every one of them registers and serves a rendezvous, 1 MiB each way, over the generic protocol
 * (PUT, then R/I lines on raw sockets) and over the HTTP-specific one (a raw
 * `CONNECT uuid:<ID>?response=<code>`, then a mobile request through the relay's HTTP port).
 *
 * One identity per protocol, imported together: a PUT's step is not taken again by a CONNECT (one
 * door per code; listed), so one identity would need a second step for the HTTP-specific clients.
 * With two, both protocols run side by side in the same fresh step instead of a step apart.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { startCluster } from '../support/cluster.js';
import { dial, sha256 } from '../support/net.js';
import { originalAsciiSecret, originalCode, originalRecord, stepAt } from './original-model.js';

const MIB = 1024 * 1024;
/** What each original client is configured with: its `length` (40: the whole value). */
const LENGTHS = [6, 7, 8, 40] as const;

let cluster: Awaited<ReturnType<typeof startCluster>>;
/** The identity the generic clients share, and the one the HTTP-specific clients share. */
const GENERIC = { uuid: 'orig-lengths', secret: originalAsciiSecret() };
const HTTP = { uuid: 'orig-lengths-http', secret: originalAsciiSecret() };

beforeAll(async () => {
  // The deployment's default guess limits: nothing here guesses wrong.
  cluster = await startCluster(1);
  const out = await runCli(
    ['import'],
    {
      AWS_ENDPOINT_URL_DYNAMODB: cluster.storeEndpoint,
      AWS_REGION: 'local',
      RENDEZVOUS_TABLE: cluster.store.table,
    },
    JSON.stringify({
      [GENERIC.uuid]: originalRecord(GENERIC.uuid, GENERIC.secret),
      [HTTP.uuid]: originalRecord(HTTP.uuid, HTTP.secret),
    }),
  );
  expect(out.code).toBe(0);
  expect(out.stdout.toString()).toMatch(/^imported 2,/);
}, 60_000);

afterAll(async () => cluster?.close());

/**
 * A step that starts with at least `ms` left in it (waiting for the next one if this one has less),
 * the same for both tests: they run side by side in it, one identity each.
 */
let fresh: Promise<number> | undefined;
function freshStep(ms: number): Promise<number> {
  fresh ??= (async () => {
    const left = 30_000 - (Date.now() % 30_000);
    if (left < ms) await new Promise((r) => setTimeout(r, left + 50));
    return stepAt(Date.now());
  })();
  return fresh;
}

/** Collects bytes from `s` until `n` have arrived (or it ends), in one Buffer. */
function readBytes(s: Socket, n: number, ms = 20_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err?: Error) => {
      clearTimeout(t);
      s.off('data', onData);
      s.off('end', onEnd);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks));
    };
    const t = setTimeout(() => done(new Error(`timed out after ${size} of ${n} bytes`)), ms);
    const onData = (c: Buffer) => {
      chunks.push(c);
      size += c.length;
      if (size >= n) done();
    };
    const onEnd = () => done(size >= n ? undefined : new Error(`ended after ${size} of ${n} bytes`));
    s.on('data', onData);
    s.on('end', onEnd);
  });
}

/** Reads up to the end of an HTTP head; returns the head and whatever followed it. */
async function readHead(s: Socket, ms = 10_000): Promise<{ head: string; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => {
      s.off('data', onData);
      reject(new Error(`no head; saw ${JSON.stringify(buf.toString('latin1').slice(0, 200))}`));
    }, ms);
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      clearTimeout(t);
      s.off('data', onData);
      resolve({ head: buf.subarray(0, end).toString('latin1'), rest: buf.subarray(end + 4) });
    };
    s.on('data', onData);
  });
}

interface Body {
  result?: { host: string; port: number; cookie: string };
  error?: { permanent: boolean; diagnostic: string };
}

async function api(method: string, query: string): Promise<{ status: number; body: Body }> {
  const res = await fetch(`${cluster.apiUrl}/?${query}`, { method });
  return { status: res.status, body: (await res.json()) as Body };
}

/** One original generic client: PUT with its code, park with R, serve one mobile, 1 MiB each way. */
async function genericRendezvous(code: string): Promise<void> {
  const { uuid } = GENERIC;
  const put = await api('PUT', `uuid=${uuid}&response=${code}`);
  expect(put, `PUT with a ${code.length}-digit code`).toMatchObject({ status: 200 });
  const triple = put.body.result as { port: number; cookie: string };
  const hidden = await dial(triple.port);
  hidden.write(`${triple.cookie}\n`);
  const get = await api('GET', `uuid=${uuid}`);
  expect(get.status).toBe(200);
  const up = randomBytes(MIB);
  const down = randomBytes(MIB);
  const mobile = await dial(get.body.result?.port as number);
  mobile.write(`${get.body.result?.cookie}\n`);
  mobile.write(up);
  const atHidden = await readBytes(hidden, 4 + MIB);
  expect(atHidden.subarray(0, 4).toString()).toBe('+OK\n');
  expect(sha256(atHidden.subarray(4))).toBe(sha256(up));
  hidden.end(down);
  const atMobile = await readBytes(mobile, 4 + MIB);
  expect(atMobile.subarray(0, 4).toString()).toBe('+OK\n');
  expect(sha256(atMobile.subarray(4))).toBe(sha256(down));
  mobile.destroy();
  hidden.destroy();
}

/** One original HTTP-specific client: CONNECT with its code, serve one POST, 1 MiB each way. */
async function httpRendezvous(code: string): Promise<void> {
  const { uuid } = HTTP;
  const httpPort = cluster.relays[0]?.httpAddress?.port as number;
  const hidden = await dial(httpPort);
  hidden.write(`CONNECT uuid:${uuid}?response=${code} HTTP/1.1\r\nHost: relay\r\n\r\n`);
  const answer = await readHead(hidden);
  expect(answer.head, `CONNECT with a ${code.length}-digit code`).toMatch(/^HTTP\/1\.1 200[ \r]/);
  const up = randomBytes(MIB);
  const down = randomBytes(MIB);
  const mobile = await dial(httpPort);
  mobile.write(`POST /upload?rendezvous=${uuid} HTTP/1.1\r\nHost: relay\r\nContent-Length: ${MIB}\r\n\r\n`);
  mobile.write(up);
  const request = await readHead(hidden);
  expect(request.head).toMatch(new RegExp(`^POST /upload\\?rendezvous=${uuid} HTTP/1\\.1\r\n`));
  const bodyUp = Buffer.concat([request.rest, await readBytes(hidden, MIB - request.rest.length)]);
  expect(sha256(bodyUp)).toBe(sha256(up));
  hidden.end(
    Buffer.concat([
      Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${MIB}\r\nConnection: close\r\n\r\n`),
      down,
    ]),
  );
  const response = await readHead(mobile);
  expect(response.head).toMatch(/^HTTP\/1\.1 200 /);
  const bodyDown = Buffer.concat([response.rest, await readBytes(mobile, MIB - response.rest.length)]);
  expect(sha256(bodyDown)).toBe(sha256(down));
  mobile.destroy();
  hidden.destroy();
}

describe.concurrent('one imported identity, left unchanged, serves original clients of every code length', () => {
  it('generic protocol: 6, 7, 8 digits and the full value, within one step, 1 MiB each way', async () => {
    const step = await freshStep(25_000);
    for (const length of LENGTHS) await genericRendezvous(originalCode(GENERIC.secret, step, length));
    expect(stepAt(Date.now())).toBe(step);
  }, 90_000);

  it('HTTP-specific protocol: 6, 7, 8 digits and the full value, within one step, 1 MiB each way', async () => {
    const step = await freshStep(25_000);
    for (const length of LENGTHS) await httpRendezvous(originalCode(HTTP.secret, step, length));
    expect(stepAt(Date.now())).toBe(step);
  }, 90_000);
});
