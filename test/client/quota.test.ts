/**
 * A quota refusal as the agent, the library and the CLI take it (issue 30): a typed
 * QUOTA_EXCEEDED error on both protocols, one log line and a long shared wait instead of a retry
 * loop, and a clear line with exit 1 from `connect`. The relay is a scripted one on real sockets
 * (test/support/quota-relay.ts: `-ERR quota exceeded`, and the relay's own 429 answer), since
 * what is under test is the client's side; the real relay's refusal is tested end to end beside
 * the relay's quota tests.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentEvent } from '../../client/agent-report.js';
import { exposeHiddenServer, type HiddenServer } from '../../client/hidden-server.js';
import { connect, rendezvousErrorOf, rendezvousUrl } from '../../client/mobile.js';
import { isRendezvousError, type RendezvousError } from '../../core/errors.js';
import { type LogRecord, memoryLog } from '../../core/log.js';
import { newTotpSecret } from '../../core/totp.js';
import { runCli, spawnCli, stop, waitForOutput } from '../support/cli.js';
import { restartableEcho } from '../support/fake-relay.js';
import { quotaApi, quotaGenericRelay, quotaHttpRelay } from '../support/quota-relay.js';
import { waitFor } from '../support/wait.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** The wait after a quota refusal in these tests (the option `quotaRecheckMs`; default 15 min). */
const RECHECK_MS = 3_000;
/** How long the tests watch for a dial that must not come (shorter than RECHECK_MS). */
const QUIET_MS = 2_000;

const QUOTA_LINE = /^quota exceeded for (\S+): the operator's monthly quota is spent; parking again in /;

async function agentAgainst(opts: Partial<Parameters<typeof exposeHiddenServer>[0]>) {
  const target = await restartableEcho(cleanup);
  const records: LogRecord[] = [];
  const events: AgentEvent[] = [];
  const quotas: Array<{ err: RendezvousError; waitMs: number }> = [];
  const errors: Error[] = [];
  const agent: HiddenServer = exposeHiddenServer({
    uuid: 'quota-agent',
    secret: newTotpSecret(),
    target: { host: '127.0.0.1', port: target.port },
    probeEveryMs: 0,
    quotaRecheckMs: RECHECK_MS,
    log: memoryLog('agent', records),
    ...opts,
  });
  agent.on('report', (e: AgentEvent) => events.push(e));
  agent.on('quota', (err: RendezvousError, waitMs: number) => quotas.push({ err, waitMs }));
  agent.on('error', (err: Error) => errors.push(err));
  cleanup.push(() => agent.close());
  const quotaLines = () => records.filter((r) => QUOTA_LINE.test(r.msg));
  return { agent, records, events, quotas, errors, quotaLines };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the agent told quota exceeded', () => {
  it('generic: one line, a typed event, no dial within the wait for any slot, parks again after it', async () => {
    const relay = await quotaGenericRelay(cleanup);
    const api = await quotaApi(cleanup, relay.port);
    const { agent, quotas, errors, quotaLines, events } = await agentAgainst({
      api: api.url,
      uuid: 'quota-gen',
      pool: 3,
    });
    await waitFor(() => quotas.length === 1, 20_000, 'quota event');
    const first = quotas[0] as { err: RendezvousError; waitMs: number };
    expect(isRendezvousError(first.err, 'QUOTA_EXCEEDED')).toBe(true);
    expect(first.err.retryAfter).toBeGreaterThan(0);
    expect(first.waitMs).toBeGreaterThanOrEqual(RECHECK_MS);
    expect(first.waitMs).toBeLessThan(RECHECK_MS * 2);
    // The three slots dialled together on the shared registration, before any verdict could come
    // back: one refusal each, then nobody until the wait ends.
    const before = 3;
    await waitFor(() => relay.attempts.length === before, 10_000, "the pool's first dials");
    await sleep(QUIET_MS);
    expect(relay.attempts.length).toBe(before);
    expect(api.calls.put).toBe(1);
    expect(quotaLines()).toHaveLength(1);
    expect(quotaLines()[0]?.msg).toMatch(/^quota exceeded for quota-gen: /);
    expect(quotaLines()[0]?.level).toBe('WARN');
    expect(agent.status().lastError?.reason).toBe('quota exceeded');
    expect(events).toContainEqual({ event: 'error', reason: 'quota exceeded', fatal: false });
    expect(errors).toEqual([]); // not fatal: the agent waits, it does not stop

    // The operator raised the quota: after the wait the agent parks again, the whole pool.
    relay.state.refusing = false;
    await waitFor(() => relay.parked.length === 3, 30_000, 'the pool parked again');
    const refusedAt = (relay.attempts[before - 1] as { at: number }).at;
    expect((relay.attempts[before] as { at: number }).at - refusedAt).toBeGreaterThanOrEqual(RECHECK_MS - 50);
    // One prober after the wait, then the others: no burst of refused dials.
    expect(relay.attempts.length).toBe(before + 3);
    expect(quotaLines()).toHaveLength(1);
  });

  it('http: a 429 quota answer to the CONNECT is one line and one wait, then one CONNECT again', async () => {
    const relay = await quotaHttpRelay(cleanup);
    const { quotas, quotaLines, errors } = await agentAgainst({
      protocol: 'http',
      relay: relay.url,
      uuid: 'quota-http',
      pool: 2,
    });
    await waitFor(() => quotas.length === 1, 20_000, 'quota event');
    expect(isRendezvousError(quotas[0]?.err, 'QUOTA_EXCEEDED')).toBe(true);
    // The relay's Retry-After (seconds to the next month) is kept on the error.
    expect(quotas[0]?.err.retryAfter).toBeGreaterThan(0);
    expect(relay.attempts[0]?.line).toMatch(/^CONNECT /);
    await sleep(QUIET_MS);
    // Codes are single-use: one CONNECT at a time until a cookie is known, so one attempt.
    expect(relay.attempts).toHaveLength(1);
    expect(quotaLines()).toHaveLength(1);
    expect(quotaLines()[0]?.msg).toMatch(/^quota exceeded for quota-http: /);
    await waitFor(() => relay.attempts.length >= 2, 30_000, 'the CONNECT after the wait');
    expect((relay.attempts[1]?.at ?? 0) - (relay.attempts[0]?.at ?? 0)).toBeGreaterThanOrEqual(
      RECHECK_MS - 50,
    );
    // Still over quota: one more line for the new wait, no burst.
    await waitFor(() => quotas.length === 2, 20_000, 'second quota event');
    expect(relay.attempts).toHaveLength(2);
    expect(quotaLines()).toHaveLength(2);
    expect(errors).toEqual([]);
  });
  it('generic: a registration refused for quota is the same one line and one wait', async () => {
    const relay = await quotaGenericRelay(cleanup);
    const api = await quotaApi(cleanup, relay.port, { refuseRegistration: true });
    const { quotas, quotaLines, errors } = await agentAgainst({ api: api.url, uuid: 'quota-reg', pool: 2 });
    await waitFor(() => quotas.length === 1, 20_000, 'quota event');
    expect(quotas[0]?.err.retryAfter).toBe(3600);
    await sleep(QUIET_MS);
    // One registration shared by the pool, refused once; nothing dialled the relay.
    expect(api.calls.put).toBe(1);
    expect(relay.attempts).toHaveLength(0);
    expect(quotaLines()).toHaveLength(1);
    await waitFor(() => api.calls.put === 2, 30_000, 'the registration after the wait');
    expect(errors).toEqual([]);
  });
});

describe('a mobile client told quota exceeded', () => {
  it('generic: connect() rejects with QUOTA_EXCEEDED at once, without retrying', async () => {
    const relay = await quotaGenericRelay(cleanup);
    const api = await quotaApi(cleanup, relay.port);
    const err = await connect({ api: api.url, uuid: 'quota-mobile' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isRendezvousError(err, 'QUOTA_EXCEEDED')).toBe(true);
    expect((err as RendezvousError).message).toMatch(/^quota exceeded/);
    expect((err as RendezvousError).retryAfter).toBeGreaterThan(0);
    expect((err as RendezvousError).permanent).toBe(false);
    expect(relay.attempts.map((a) => a.line)).toEqual(['IquotaCookie0123456789']);
    expect(api.calls.get).toBe(1);
  });

  it("generic: the relay's cap on live rendezvous is a BUSY error, not a bare refusal", async () => {
    const relay = await quotaGenericRelay(cleanup);
    relay.state.diagnostic = 'too many live rendezvous for this hidden server';
    const api = await quotaApi(cleanup, relay.port);
    const err = await connect({ api: api.url, uuid: 'busy-mobile' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isRendezvousError(err, 'BUSY')).toBe(true);
    expect((err as RendezvousError).message).toBe('too many live rendezvous for this hidden server');
    expect((err as RendezvousError).permanent).toBe(false);
  });

  it("http: the relay's 429 reads as QUOTA_EXCEEDED through rendezvousErrorOf", async () => {
    const relay = await quotaHttpRelay(cleanup);
    const res = await fetch(rendezvousUrl(relay.url, 'quota-web', '/status'));
    expect(res.status).toBe(429);
    const err = await rendezvousErrorOf(res);
    expect(isRendezvousError(err, 'QUOTA_EXCEEDED')).toBe(true);
    expect(err?.retryAfter).toBe(Number(res.headers.get('retry-after')));
    expect(relay.attempts).toHaveLength(1);
  });
});

describe('the CLI told quota exceeded', () => {
  it('connect prints one clear line and exits 1', async () => {
    const relay = await quotaGenericRelay(cleanup);
    const api = await quotaApi(cleanup, relay.port);
    const { code, stderr, stdout } = await runCli(['connect', '--uuid', 'quota-cli', '--api', api.url]);
    expect(code).toBe(1);
    expect(stdout.length).toBe(0);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(
      /^rendezvous: quota exceeded for quota-cli: the hidden server's monthly quota is spent; try again once its operator raises it, or after the month ends \(in [0-9dhms]+\)\n$/,
    );
    expect(relay.attempts).toHaveLength(1);
  });

  it('expose logs the quota line once and keeps running (it waits, it does not exit)', async () => {
    const relay = await quotaGenericRelay(cleanup);
    const api = await quotaApi(cleanup, relay.port);
    const target = await restartableEcho(cleanup);
    const child = spawnCli(
      [
        ...['expose', '--uuid', 'quota-expose', '--to', String(target.port), '--api', api.url],
        ...['--quota-recheck', String(RECHECK_MS / 1000)],
      ],
      {
        RENDEZVOUS_SECRET: newTotpSecret(),
      },
    );
    cleanup.push(() => stop(child));
    const err = await waitForOutput(child, /quota exceeded for quota-expose[^\n]*\n/, 20_000, 'stderr');
    expect(err).toMatch(
      /warn: quota exceeded for quota-expose: the operator's monthly quota is spent; parking again in 3s reason=quota exceeded/,
    );
    await sleep(QUIET_MS);
    expect(child.exitCode).toBe(null);
    expect(relay.attempts).toHaveLength(1);
    // --quota-recheck bounds the wait: the second park comes after it, and is said once more.
    await waitForOutput(child, /quota exceeded for quota-expose/, 30_000, 'stderr');
    expect(relay.attempts).toHaveLength(2);
    expect((relay.attempts[1]?.at ?? 0) - (relay.attempts[0]?.at ?? 0)).toBeGreaterThanOrEqual(
      RECHECK_MS - 50,
    );
    expect(child.exitCode).toBe(null);
  });
});
