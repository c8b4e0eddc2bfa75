/**
 * Issue 30: limits per identity on a running relay. A monthly quota refuses new rendezvous on
 * both protocols, for the mobile client and for the agent trying to park (`-ERR quota exceeded`,
 * HTTP 429 with `Retry-After`); a rendezvous already live when the month runs out ends at the
 * next round, recorded `revoked` with reason `quota exceeded`; `maxConcurrent` replaces the
 * relay's cap for that identity. Limits set (and cleared) while the relay runs take effect at
 * the round that reads their notice; an identity without limits costs no usage read at all.
 *
 * "The relay read the identity again" is the signal that a round saw a change: every read of the
 * store is counted (spies on the real store, passing each call through).
 */
import { execFile } from 'node:child_process';
import type { Socket } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { LIMITS_NOTICE_ROUNDS } from '../../relay/revalidate.js';
import { provisionIdentity } from '../../server/identities.js';
import type { IdentityLimits, UsageTotals } from '../../server/usage-types.js';
import { emptyTotals } from '../../server/usage-types.js';
import { startCluster } from '../support/cluster.js';
import { closedWithin, dial } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const run = promisify(execFile);
type Cluster = Awaited<ReturnType<typeof startCluster>>;
let c: Cluster;
const opened: Socket[] = [];
/** Reads of each uuid's identity item, and of its month's usage, by anyone (relay or API). */
const reads = {
  identity: new Map<string, { started: number; done: number; limits?: boolean }[]>(),
  month: new Map<string, number>(),
};

beforeAll(async () => {
  // Short rounds: a change is seen within a round, and the test waits for that read.
  // Two relays: hidden servers park on relay 0; relay 1 serves a mobile client through a peer link.
  c = await startCluster(2, { relay: { revalidateMs: 300, pairWaitMs: 1_500 } });
  const store = c.store;
  const getIdentity = store.getIdentity.bind(store);
  vi.spyOn(store, 'getIdentity').mockImplementation(async (uuid) => {
    // Which reads the limits make (the API's and the revocation re-check's are there without them).
    const read = { started: Date.now(), done: 0, limits: new Error().stack?.includes('IdentityLimitsCache') };
    reads.identity.set(uuid, [...(reads.identity.get(uuid) ?? []), read]);
    const got = await getIdentity(uuid);
    read.done = Date.now();
    return got;
  });
  const monthBytes = store.monthBytes.bind(store);
  vi.spyOn(store, 'monthBytes').mockImplementation((uuid, nowMs) => {
    reads.month.set(uuid, (reads.month.get(uuid) ?? 0) + 1);
    return monthBytes(uuid, nowMs);
  });
}, 60_000);

afterAll(async () => {
  for (const s of opened) s.destroy();
  await waitFor(() => (c?.relays ?? []).every((r) => r.lot.size === 0 && r.splices === 0), 20_000, 'closed');
  await c?.close();
});

/**
 * Sets limits on an identity the relay has seen, then waits until the relay has read the identity
 * after the change (a round saw its notice).
 */
async function setLimits(uuid: string, limits: IdentityLimits | undefined): Promise<void> {
  await c.store.setLimits(uuid, limits);
  const after = Date.now();
  await waitFor(
    () => (reads.identity.get(uuid) ?? []).some((r) => r.started >= after && r.done > 0),
    20_000,
    'the relay read the new limits',
  );
  // The read's answer reaches the cache a few microtasks after it resolved.
  await new Promise((r) => setTimeout(r, 20));
}

/** `bytes` of this month's usage, as a relay's flush would write it. */
function usage(bytes: number): UsageTotals {
  const t = emptyTotals();
  t.generic.bytesToMobile = bytes;
  return t;
}

/** Collects what `s` receives. */
function reader(s: Socket) {
  let text = '';
  s.on('data', (d: Buffer) => {
    text += d.toString('latin1');
  });
  s.on('error', () => {});
  return {
    text: () => text,
    until: (want: string) => waitFor(() => text.includes(want), 20_000, `"${want}" received`),
  };
}

async function open(port: number): Promise<Socket> {
  const s = await dial(port);
  opened.push(s);
  return s;
}

/** Provisions and registers `uuid`: its R and I cookies. */
async function generic(uuid: string) {
  const id = await provisionIdentity(c.store, { uuid });
  const put = await fetch(`${c.apiUrl}/?uuid=${uuid}&response=${currentCode(id)}`, { method: 'PUT' });
  const r = ((await put.json()) as { result: { cookie: string } }).result.cookie;
  const i = ((await (await fetch(`${c.apiUrl}/?uuid=${uuid}`)).json()) as { result: { cookie: string } })
    .result.cookie;
  return { id, r, i };
}

const relay = () => c.relays[0] as Cluster['relays'][number];

/** Parks `count` R sockets of `r`. */
async function park(r: string, count = 1) {
  const parks = [];
  for (let k = 0; k < count; k++) {
    const s = await open(relay().address.port);
    const p = reader(s);
    s.write(`${r}\n`);
    parks.push({ s, ...p });
  }
  return parks;
}

/** One I line (at relay `at`); what the relay answered (its first line). */
async function mobile(i: string, at = 0) {
  const s = await open(c.relays[at]?.address.port as number);
  const m = reader(s);
  s.write(`${i}\n`);
  await waitFor(() => m.text().includes('\n'), 20_000, 'an answer');
  return { s, ...m };
}

/** The relay's refusal records of `uuid` with `reason`. */
const refusals = (uuid: string, reason: string) =>
  (c.logs[0] ?? []).filter(
    (l) => l.msg === 'refused' && l.fields?.uuid === uuid && l.fields?.reason === reason,
  );

/** One curl request on the HTTP port: status line, headers and body. */
async function curl(uuid: string): Promise<string> {
  const port = relay().httpAddress?.port as number;
  const { stdout } = await run('curl', [
    '-s',
    '-i',
    '--max-time',
    '20',
    `http://127.0.0.1:${port}/?rendezvous=${uuid}`,
  ]);
  return stdout;
}

/** An HTTP park by CONNECT; its socket and what it received. */
async function connectPark(uuid: string, secret: string, by: 'response' | 'cookie' = 'response') {
  const s = await open(relay().httpAddress?.port as number);
  const h = reader(s);
  s.write(`CONNECT uuid:${uuid}?${by}=${secret} HTTP/1.1\r\n\r\n`);
  await waitFor(() => h.text().includes('\r\n\r\n'), 20_000, 'CONNECT answered');
  return { s, ...h };
}

describe('monthly quota', () => {
  it('generic: a spent quota ends the parks, refuses the mobile client and the next park; cleared, it pairs again', async () => {
    const uuid = 'quota-generic';
    const { r, i } = await generic(uuid);
    const [parked] = await park(r);
    await waitFor(() => relay().lot.sizeOf('generic') > 0, 20_000, 'parked');
    await c.store.addUsage(uuid, usage(5_000));
    await setLimits(uuid, { monthlyBytes: 4_096 });
    // The round that read the notice told the parked agent at once.
    await parked?.until('-ERR quota exceeded\n');
    const refused = await mobile(i);
    expect(refused.text()).toBe('-ERR quota exceeded\n');
    const [again] = await park(r);
    await again?.until('-ERR quota exceeded\n');
    await waitFor(() => refusals(uuid, 'quota_exceeded').length >= 3, 5_000, 'refusal records');

    // Raised above the month's bytes: the agent parks and a client pairs again.
    await setLimits(uuid, { monthlyBytes: 1_000_000 });
    await park(r);
    await waitFor(() => relay().lot.sizeOf('generic') > 0, 20_000, 'parked again');
    expect((await mobile(i)).text()).toMatch(/^\+OK/);
  });

  it('HTTP: a spent quota answers 429 with Retry-After to the CONNECT and to curl', async () => {
    const uuid = 'quota-http';
    const id = await provisionIdentity(c.store, { uuid });
    const first = await connectPark(uuid, currentCode(id));
    expect(first.text()).toMatch(/^HTTP\/1\.1 200/);
    await c.store.addUsage(uuid, usage(10_000));
    await setLimits(uuid, { monthlyBytes: 10_000 });
    // The parked agent is closed by the round; its next CONNECT is told why.
    await waitFor(() => first.s.readableEnded || first.s.destroyed, 20_000, 'the park closed by the relay');
    // Its re-park with the cookie of its 200 (as an agent re-parks) is told why.
    const cookie = /Rendezvous-Cookie: (\S+)/i.exec(first.text())?.[1] as string;
    const next = await connectPark(uuid, cookie, 'cookie');
    expect(next.text()).toMatch(/^HTTP\/1\.1 429 /);
    expect(next.text()).toMatch(/\r\nRetry-After: [1-9][0-9]*\r\n/);
    expect(next.text()).toContain('"diagnostic":"quota exceeded"');

    const answer = await curl(uuid);
    expect(answer).toMatch(/^HTTP\/1\.1 429 /);
    expect(answer).toMatch(/\r\nRetry-After: [1-9][0-9]*\r\n/);
    expect(answer).toContain('"diagnostic":"quota exceeded"');
    expect(refusals(uuid, 'quota_exceeded').length).toBeGreaterThanOrEqual(2);
  });

  it('a live rendezvous ends at the round after its month runs out, recorded revoked: quota exceeded', async () => {
    const uuid = 'quota-live';
    const { r, i } = await generic(uuid);
    // Before the relay has seen the identity: its first park reads them.
    await c.store.setLimits(uuid, { monthlyBytes: 1_000_000 });
    const [hidden] = await park(r);
    await waitFor(() => relay().lot.sizeOf('generic') > 0, 20_000, 'parked');
    const m = await mobile(i);
    expect(m.text()).toMatch(/^\+OK/);
    m.s.write('ping');
    await hidden?.until('ping');
    // Another relay's flush (no notice: usage is no change of the identity) spends the month.
    await c.store.addUsage(uuid, usage(1_000_000));
    await closedWithin(m.s, 30_000);
    await closedWithin(hidden?.s as Socket, 30_000);
    const ended = () =>
      (c.logs[0] ?? []).filter((l) => l.msg === 'rendezvous ended' && l.fields?.uuid === uuid);
    await waitFor(() => ended().length > 0, 5_000, 'record');
    expect(ended()[0]?.fields).toMatchObject({ end: 'revoked', reason: 'quota exceeded' });
  });

  it('through two relays: the holder ends the live rendezvous, and the relay the client reached refuses the next', async () => {
    const uuid = 'quota-peer';
    const { r, i } = await generic(uuid);
    await c.store.setLimits(uuid, { monthlyBytes: 1_000_000 });
    const [hidden] = await park(r);
    await waitFor(() => relay().lot.count('generic', i.slice(1)) > 0, 20_000, 'parked');
    const m = await mobile(i, 1);
    expect(m.text()).toMatch(/^\+OK/);
    m.s.write('ping');
    await hidden?.until('ping');
    await c.store.addUsage(uuid, usage(2_000_000));
    await closedWithin(m.s, 30_000);
    await closedWithin(hidden?.s as Socket, 30_000);
    const ended = () =>
      (c.logs[0] ?? []).filter((l) => l.msg === 'rendezvous ended' && l.fields?.uuid === uuid);
    await waitFor(() => ended().length > 0, 5_000, 'record');
    expect(ended()[0]?.fields).toMatchObject({ end: 'revoked', reason: 'quota exceeded', hops: 1 });
    // Relay 1 reads the month's total again within seconds (MONTH_TOTAL_TTL_MS) and refuses.
    let last = '';
    await waitFor(
      async () => {
        last = (await mobile(i, 1)).text();
        return last === '-ERR quota exceeded\n';
      },
      30_000,
      'relay 1 refusing',
    );
    expect(refusals(uuid, 'quota_exceeded')).toEqual([]);
    expect(
      (c.logs[1] ?? []).some(
        (l) => l.msg === 'refused' && l.fields?.uuid === uuid && l.fields?.reason === 'quota_exceeded',
      ),
    ).toBe(true);
  });
});

describe('maximum concurrent rendezvous', () => {
  it('set on a running relay: N live, the next refused with the cap message; cleared, the relay default again', async () => {
    const uuid = 'concurrent';
    const { r, i } = await generic(uuid);
    await park(r, 4);
    await waitFor(() => relay().lot.sizeOf('generic') >= 4, 20_000, 'parked');
    await setLimits(uuid, { maxConcurrent: 2 });
    for (let k = 0; k < 2; k++) expect((await mobile(i)).text()).toMatch(/^\+OK/);
    expect((await mobile(i)).text()).toBe('-ERR too many live rendezvous for this hidden server\n');
    await setLimits(uuid, undefined);
    expect((await mobile(i)).text()).toMatch(/^\+OK/);
  });

  it('HTTP: N requests live, the next answered 503 with the cap message', async () => {
    const uuid = 'concurrent-http';
    const id = await provisionIdentity(c.store, { uuid });
    await c.store.setLimits(uuid, { maxConcurrent: 2 });
    // Three parks that never answer: each request paired with one stays live.
    const first = await connectPark(uuid, currentCode(id));
    const cookie = /Rendezvous-Cookie: (\S+)/i.exec(first.text())?.[1] as string;
    for (let k = 0; k < 2; k++) await connectPark(uuid, cookie, 'cookie');
    await waitFor(() => relay().lot.count('http', uuid) >= 3, 20_000, 'parked');
    const before = relay().splices;
    const port = relay().httpAddress?.port as number;
    for (let k = 0; k < 2; k++)
      (await open(port)).write(`GET /?rendezvous=${uuid} HTTP/1.1\r\nHost: r\r\n\r\n`);
    await waitFor(() => relay().splices - before === 2, 20_000, 'two live');
    const answer = await curl(uuid);
    expect(answer).toMatch(/^HTTP\/1\.1 503 /);
    expect(answer).toContain('too many live rendezvous for this hidden server');
  });
});

describe('store reads', () => {
  it('an identity without limits: no usage read, and its identity read once, not per rendezvous', async () => {
    const uuid = 'unlimited';
    const { r, i } = await generic(uuid);
    const limitReads = () => (reads.identity.get(uuid) ?? []).filter((x) => x.limits).length;
    await park(r, 10);
    await waitFor(() => relay().lot.sizeOf('generic') >= 10, 20_000, 'parked');
    for (let k = 0; k < 10; k++) expect((await mobile(i)).text()).toMatch(/^\+OK/);
    // The limits' one read, and at most LIMITS_NOTICE_ROUNDS for each change notice of the uuid
    // (provisioning and registering write them): never one per park or rendezvous (20 here).
    const notices = (await c.store.changesSince(0)).filter((n) => n.uuid === uuid).length;
    expect(limitReads()).toBeGreaterThanOrEqual(1);
    expect(limitReads()).toBeLessThanOrEqual(1 + LIMITS_NOTICE_ROUNDS * notices);
    expect(1 + LIMITS_NOTICE_ROUNDS * notices).toBeLessThan(20);
    expect(reads.month.get(uuid) ?? 0).toBe(0);
  });

  it('an identity with a quota: its month total read at most once per few seconds', async () => {
    const uuid = 'capped-reads';
    const { r, i } = await generic(uuid);
    await c.store.setLimits(uuid, { monthlyBytes: 1e12 });
    await park(r, 5);
    await waitFor(() => relay().lot.sizeOf('generic') >= 5, 20_000, 'parked');
    const started = Date.now();
    for (let k = 0; k < 5; k++) expect((await mobile(i)).text()).toMatch(/^\+OK/);
    // One read per 5 s (MONTH_TOTAL_TTL_MS), plus the one in flight at the start.
    const allowed = Math.ceil((Date.now() - started) / 5_000) + 1;
    expect(reads.month.get(uuid) ?? 0).toBeLessThanOrEqual(allowed);
  });
});
