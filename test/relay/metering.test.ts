/**
 * Issue 30, metering per identity: what the store holds (`usageOf`) equals what was sent in
 * sha256-verified transfers of several sizes, each direction, through one relay and through two
 * (the mobile client on one, the hidden server parked on the other: counted once, by the relay
 * the mobile client reached), on the generic protocol and on the HTTP-specific one. A long
 * rendezvous shows its usage before it ends; the relay process flushes at SIGTERM; `/metrics`
 * names at most the top 10 identities; an idle relay writes nothing.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { relayLimitsFromEnv } from '../../relay/main.js';
import { type Relay, startRelay } from '../../relay/server.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import { registerHiddenServer } from '../../server/register.js';
import { emptyTotals, type UsageTotals } from '../../server/usage-types.js';
import { dial, sha256 } from '../support/net.js';
import { spawnRelayProcess } from '../support/relay-process.js';
import { embeddedStore } from '../support/store.js';

const SECRET = 'cluster-secret-for-metering';
const KiB = 1024;
const MiB = 1024 * KiB;
/** Each size once each way: [to the hidden server, to the mobile client]; unequal so a swap shows. */
const TRANSFERS: Array<[number, number]> = [
  [0, 8 * MiB],
  [KiB, MiB],
  [MiB, KiB],
  [8 * MiB, 0],
];

let store: Awaited<ReturnType<typeof embeddedStore>>;
let a: Relay;
let b: Relay;

beforeAll(async () => {
  store = await embeddedStore();
  const common = {
    store: store.store,
    port: 0,
    httpPort: 0,
    peerPort: 0,
    healthPort: 0,
    clusterSecret: SECRET,
    pairWaitMs: 5_000,
    maxHandshakesPerSource: 10_000,
    maxSplicesPerSource: 10_000,
    metering: { flushMs: 200 },
  };
  a = await startRelay(common);
  b = await startRelay(common);
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  await store?.close();
});

async function until(cond: () => boolean | Promise<boolean>, ms = 30_000, what = 'condition') {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what} not met in time`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Everything a socket receives, and whether it ended. */
function collect(s: Socket) {
  const chunks: Buffer[] = [];
  let closed = false;
  let ended = false;
  s.on('data', (c: Buffer) => chunks.push(c));
  s.on('end', () => {
    ended = true;
  });
  s.on('close', () => {
    closed = true;
  });
  s.on('error', () => {});
  return { all: () => Buffer.concat(chunks), closed: () => closed, ended: () => ended };
}

/** Usage with only `protocol` set. */
function expected(protocol: 'generic' | 'http', toHidden: number, toMobile: number, n: number): UsageTotals {
  const t = emptyTotals();
  t[protocol].bytesToHidden = toHidden;
  t[protocol].bytesToMobile = toMobile;
  t[protocol].rendezvous = n;
  return t;
}

/** The store's usage of `uuid` today, once no relay holds any of it unflushed. */
async function flushedUsage(uuid: string): Promise<UsageTotals> {
  await until(() => [a, b].every((r) => r.meter?.unflushedBytes(uuid) === 0), 30_000, 'flush');
  return (await store.store.usageOf(uuid)).today;
}

/** Seconds set aside: the bytes and counts must be exact, the seconds only plausible. */
function withoutSeconds(t: UsageTotals): UsageTotals {
  return {
    generic: { ...t.generic, connectionSeconds: 0 },
    http: { ...t.http, connectionSeconds: 0 },
  };
}

/** A fresh identity registered for the generic protocol: its R cookie (without the `R`). */
async function genericIdentity(uuid: string): Promise<string> {
  const id = await provisionIdentity(store.store, { uuid });
  const triple = await registerHiddenServer(
    store.store,
    { relayHost: '127.0.0.1', relayPort: 1 },
    id.uuid,
    currentCode(id),
  );
  return triple.cookie.slice(1);
}

/** Parks a generic hidden server on `at`; resolves once the relay (or the store, for a peer) has it. */
async function parkGeneric(r: string, at: Relay, from: Relay) {
  const hidden = await dial(at.address.port);
  const seen = collect(hidden);
  hidden.write(`R${r}\n`);
  const key = mobileCookieFor(r);
  if (at === from) await until(() => at.lot.count('generic', key) === 1, 10_000, 'park');
  else
    await until(async () => (await store.store.listParks('generic', key)).length > 0, 10_000, 'park record');
  return { hidden, seen };
}

/**
 * One generic rendezvous: `up` bytes to the hidden server (the first KiB as early data with the
 * cookie line), `down` bytes back; both verified by sha256 at the far end.
 */
async function genericTransfer(r: string, hiddenAt: Relay, mobileAt: Relay, up: number, down: number) {
  const { hidden, seen } = await parkGeneric(r, hiddenAt, mobileAt);
  const upData = randomBytes(up);
  const downData = randomBytes(down);
  const mobile = await dial(mobileAt.address.port);
  const got = collect(mobile);
  const early = upData.subarray(0, KiB);
  mobile.write(Buffer.concat([Buffer.from(`I${mobileCookieFor(r)}\n`), early]));
  await until(() => got.all().length >= 4, 10_000, '+OK');
  mobile.end(upData.subarray(early.length));
  await until(() => seen.all().length >= 4 + up, 60_000, 'upload');
  expect(sha256(seen.all().subarray(4))).toBe(sha256(upData));
  hidden.end(downData);
  await until(() => got.closed() && seen.closed(), 60_000, 'download');
  expect(got.all().subarray(0, 4).toString()).toBe('+OK\n');
  expect(sha256(got.all().subarray(4))).toBe(sha256(downData));
}

/**
 * Parks an HTTP-specific hidden server on `at` (CONNECT with `cred.query`: a code, then the cookie
 * the first answer handed back); resolves once parked.
 */
async function parkHttp(uuid: string, cred: { query: string }, at: Relay) {
  const hidden = await dial(at.httpAddress?.port as number);
  const seen = collect(hidden);
  hidden.write(`CONNECT uuid:${uuid}?${cred.query} HTTP/1.1\r\nHost: relay\r\n\r\n`);
  await until(() => seen.all().includes('\r\n\r\n'), 10_000, 'CONNECT answer');
  const headLength = seen.all().indexOf('\r\n\r\n') + 4;
  const head = seen.all().subarray(0, headLength).toString('latin1');
  expect(head.slice(0, 12)).toBe('HTTP/1.1 200');
  const cookie = /Rendezvous-Cookie: (\S+)/i.exec(head)?.[1];
  if (cookie) cred.query = `cookie=${cookie}`;
  return { hidden, seen, headLength };
}

/**
 * One HTTP-specific rendezvous: a POST of `up` bytes, an answer of `down` bytes, each verified by
 * sha256. Returns the bytes the hidden server received (after its CONNECT answer) and sent.
 */
async function httpTransfer(
  uuid: string,
  cred: { query: string },
  hiddenAt: Relay,
  mobileAt: Relay,
  up: number,
  down: number,
) {
  const { hidden, seen, headLength } = await parkHttp(uuid, cred, hiddenAt);
  if (hiddenAt !== mobileAt)
    await until(async () => (await store.store.listParks('http', uuid)).length > 0, 10_000, 'park record');
  const upData = randomBytes(up);
  const downData = randomBytes(down);
  const mobile = await dial(mobileAt.httpAddress?.port as number);
  const got = collect(mobile);
  mobile.write(`POST /up?rendezvous=${uuid} HTTP/1.1\r\nHost: x\r\nContent-Length: ${up}\r\n\r\n`);
  mobile.write(upData);
  // The hidden server reads the forwarded head, then exactly the body it announces.
  let received = Buffer.alloc(0);
  await until(
    () => {
      received = seen.all().subarray(headLength);
      const end = received.indexOf('\r\n\r\n');
      return end >= 0 && received.length >= end + 4 + up;
    },
    60_000,
    'request',
  );
  const bodyAt = received.indexOf('\r\n\r\n') + 4;
  expect(sha256(received.subarray(bodyAt))).toBe(sha256(upData));
  const answer = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${down}\r\n\r\n`), downData]);
  hidden.end(answer);
  await until(() => got.ended(), 60_000, 'answer');
  mobile.end();
  await until(() => got.closed() && seen.closed(), 10_000, 'close');
  const reply = got.all();
  const replyBody = reply.subarray(reply.indexOf('\r\n\r\n') + 4);
  expect(sha256(replyBody)).toBe(sha256(downData));
  return { toHidden: seen.all().length - headLength, toMobile: answer.length };
}

describe('metering: what the store holds equals what was sent', () => {
  for (const [name, hiddenAt, mobileAt] of [
    ['through one relay', () => a, () => a],
    ['through two relays (counted once)', () => a, () => b],
  ] as const) {
    it(`generic, ${name}`, async () => {
      const uuid = `meter-generic-${mobileAt() === hiddenAt() ? 'one' : 'two'}`;
      const r = await genericIdentity(uuid);
      const started = Date.now();
      for (const [up, down] of TRANSFERS) await genericTransfer(r, hiddenAt(), mobileAt(), up, down);
      const seconds = (Date.now() - started) / 1000;
      const sumUp = TRANSFERS.reduce((n, [u]) => n + u, 0);
      const sumDown = TRANSFERS.reduce((n, [, d]) => n + d, 0);
      const usage = await flushedUsage(uuid);
      expect(withoutSeconds(usage)).toEqual(expected('generic', sumUp, sumDown, TRANSFERS.length));
      expect(usage.generic.connectionSeconds).toBeGreaterThan(0);
      expect(usage.generic.connectionSeconds).toBeLessThanOrEqual(seconds + 1);
    }, 180_000);

    it(`HTTP-specific, ${name}`, async () => {
      const uuid = `meter-http-${mobileAt() === hiddenAt() ? 'one' : 'two'}`;
      const id = await provisionIdentity(store.store, { uuid });
      const cred = { query: `response=${currentCode(id)}` };
      const started = Date.now();
      let toHidden = 0;
      let toMobile = 0;
      for (const [up, down] of TRANSFERS) {
        const t = await httpTransfer(uuid, cred, hiddenAt(), mobileAt(), up, down);
        toHidden += t.toHidden;
        toMobile += t.toMobile;
      }
      const seconds = (Date.now() - started) / 1000;
      const usage = await flushedUsage(uuid);
      expect(withoutSeconds(usage)).toEqual(expected('http', toHidden, toMobile, TRANSFERS.length));
      expect(usage.http.connectionSeconds).toBeGreaterThan(0);
      expect(usage.http.connectionSeconds).toBeLessThanOrEqual(seconds + 1);
    }, 180_000);
  }
});

describe('metering while a rendezvous runs, at rest, and on /metrics', () => {
  it('a long rendezvous shows its bytes and seconds in the store before it ends', async () => {
    const uuid = 'meter-long';
    const r = await genericIdentity(uuid);
    const { hidden, seen } = await parkGeneric(r, a, b);
    const mobile = await dial(b.address.port);
    const got = collect(mobile);
    mobile.write(`I${mobileCookieFor(r)}\n`);
    await until(() => got.all().length >= 4, 10_000, '+OK');
    const part = randomBytes(256 * KiB);
    mobile.write(part);
    hidden.write(part.subarray(0, 1000));
    await until(() => seen.all().length >= 4 + part.length && got.all().length >= 4 + 1000, 10_000, 'bytes');
    await until(
      async () => (await store.store.usageOf(uuid)).today.generic.bytesToHidden === part.length,
      30_000,
      'usage of the live rendezvous',
    );
    // Still live: counted while it runs, not at its end.
    expect(got.closed() || seen.closed()).toBe(false);
    const live = (await store.store.usageOf(uuid)).today.generic;
    expect(live).toMatchObject({ bytesToHidden: part.length, bytesToMobile: 1000, rendezvous: 1 });
    // Seconds accrue over the flushes while it stays open.
    await until(
      async () => (await store.store.usageOf(uuid)).today.generic.connectionSeconds > live.connectionSeconds,
      30_000,
      'seconds',
    );
    mobile.end();
    hidden.end();
    await until(() => got.closed() && seen.closed(), 10_000, 'end');
    const usage = await flushedUsage(uuid);
    expect(withoutSeconds(usage)).toEqual(expected('generic', part.length, 1000, 1));
  }, 120_000);

  it('an idle relay writes nothing, and /metrics names at most the top 10 identities', async () => {
    // A relay of its own whose flushes the test calls, so the interval's identities are known.
    const c = await startRelay({
      store: store.store,
      port: 0,
      healthPort: 0,
      maxHandshakesPerSource: 10_000,
      metering: { flushMs: 3_600_000 },
    });
    try {
      const meter = c.meter;
      if (!meter) throw new Error('metering is on by default');
      const writes = () => /rendezvous_relay_usage_writes_total (\d+)/.exec(meter.prometheus())?.[1];
      await meter.flush();
      await meter.flush();
      expect(writes()).toBe('0');
      const uuids = Array.from({ length: 12 }, (_, i) => `meter-top-${String(i).padStart(2, '0')}`);
      for (const [i, uuid] of uuids.entries()) {
        const r = await genericIdentity(uuid);
        await genericTransfer(r, c, c, (i + 1) * 100, 0);
      }
      await meter.flush();
      expect(writes()).toBe('12');
      const text = await (await fetch(`http://127.0.0.1:${c.healthAddress?.port}/metrics`)).text();
      const named = [
        ...text.matchAll(/rendezvous_relay_identity_bytes\{uuid="([^"]+)",rank="(\d+)"\} (\d+)/g),
      ];
      // The top 10 over the last interval, largest first: the two smallest are not named.
      expect(named.map((m) => [m[1], Number(m[2]), Number(m[3])])).toEqual(
        uuids
          .slice(2)
          .reverse()
          .map((uuid, i) => [uuid, i + 1, (12 - i) * 100]),
      );
      expect((await store.store.usageOf('meter-top-11')).today.generic.bytesToHidden).toBe(1200);
      // Nothing moved since: the next flush writes nothing, and names no identity.
      await meter.flush();
      expect(writes()).toBe('12');
      expect(meter.prometheus()).not.toContain('uuid=');
    } finally {
      await c.close();
    }
  }, 120_000);
});

describe('switching it off', () => {
  it('RELAY_METERING=off: no meter, and the rendezvous is neither written nor logged as usage', async () => {
    expect(relayLimitsFromEnv({}).metering).toEqual({ flushMs: 60_000 });
    expect(relayLimitsFromEnv({ RELAY_METER_FLUSH_MS: '5000' }).metering).toEqual({ flushMs: 5_000 });
    expect(relayLimitsFromEnv({ RELAY_METERING: 'off' }).metering).toBe(false);
    expect(() => relayLimitsFromEnv({ RELAY_METERING: 'maybe' })).toThrow(/RELAY_METERING must be on or off/);
    const lines: string[] = [];
    const log = { info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), error: () => {} };
    const c = await startRelay({ store: store.store, port: 0, log, metering: false });
    try {
      expect(c.meter).toBeUndefined();
      const r = await genericIdentity('meter-off');
      await genericTransfer(r, c, c, 2000, 3000);
    } finally {
      await c.close();
    }
    expect(lines).toContain('rendezvous ended');
    expect(lines).not.toContain('usage');
    expect((await store.store.usageOf('meter-off')).today).toEqual(emptyTotals());
  }, 60_000);
});

describe('the relay process', () => {
  it('flushes at SIGTERM: an ended and a live rendezvous are in the store after a clean stop', async () => {
    const uuid = 'meter-sigterm';
    const r = await genericIdentity(uuid);
    const relay = await spawnRelayProcess({
      storeEndpoint: store.endpoint,
      table: store.store.table,
      env: {
        AWS_ACCESS_KEY_ID: 'local',
        AWS_SECRET_ACCESS_KEY: 'local',
        RELAY_HTTP_PORT: 'off',
        RELAY_DRAIN_GRACE_MS: '0',
        // Never by the timer: only the stop can have written it.
        RELAY_METER_FLUSH_MS: '3600000',
      },
    });
    const { child, exit, port } = relay;
    const pair = async (up: Buffer) => {
      const hidden = await dial(port);
      const seen = collect(hidden);
      hidden.write(`R${r}\n`);
      await new Promise((res) => setTimeout(res, 200));
      const mobile = await dial(port);
      const got = collect(mobile);
      mobile.write(`I${mobileCookieFor(r)}\n`);
      await until(() => got.all().length >= 4 && seen.all().length >= 4, 10_000, '+OK');
      mobile.write(up);
      await until(() => seen.all().length >= 4 + up.length, 10_000, 'bytes');
      return { hidden, mobile, seen, got };
    };
    const ended = await pair(randomBytes(5000));
    ended.hidden.end(Buffer.alloc(300));
    ended.mobile.end();
    await until(() => ended.got.closed() && ended.seen.closed(), 10_000, 'end');
    // Still live at the stop: the drain cuts it and counts what it carried.
    await pair(randomBytes(7000));
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    const usage = (await store.store.usageOf(uuid)).today;
    expect(withoutSeconds(usage)).toEqual(expected('generic', 12_000, 300, 2));
    const records = relay
      .output()
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((x) => x.event === 'usage');
    expect(records).toEqual([
      expect.objectContaining({
        uuid,
        genericBytesToHidden: 12_000,
        genericBytesToMobile: 300,
        genericRendezvous: 2,
      }),
    ]);
  }, 120_000);
});
