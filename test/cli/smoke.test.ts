/**
 * `rendezvous smoke` (issue 18) against the local stack: every step passes and is printed; each
 * kind of breakage fails the run with exit 1 naming its step — a wrong secret the register step,
 * a dead API the register step, a closed relay port the park step, a closed HTTP port the HTTP
 * park step. The secret never appears in the output.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSmoke, SMOKE_STEPS, SmokeFailure, type SmokeStep } from '../../cli/smoke.js';
import { lookupWithApi } from '../../client/api.js';
import { dialRelay } from '../../client/relay-conn.js';
import { base32Encode } from '../../core/totp.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { startApiAdapter } from '../../local/api-adapter.js';
import type { LocalStack } from '../../local/stack.js';
import type { RegistrationPolicy } from '../../server/register.js';
import { runCli } from '../support/cli.js';
import { closedPort, dial } from '../support/net.js';
import { provision, startStack } from '../support/stack.js';
import { parkedOnHealth, waitFor } from '../support/wait.js';

let stack: LocalStack;
const closers: Array<() => unknown> = [];

beforeAll(async () => {
  stack = await startStack({
    relay: { pairWaitMs: 3_000, healthPort: 0 },
  });
});
afterAll(async () => {
  for (const c of closers) await c();
  await stack?.close();
});

const relayHttp = () => `http://127.0.0.1:${stack.httpPort}`;

/** Runs the smoke in-process; resolves to the failed step (or undefined) and the steps passed. */
async function smoke(opts: { api: string; uuid: string; secret: string; relayHttp?: string }) {
  const passed: SmokeStep[] = [];
  try {
    await runSmoke({
      relayHttp: relayHttp(),
      stepTimeoutMs: 5_000,
      ...opts,
      onStep: (s) => passed.push(s),
    });
    return { failed: undefined, passed };
  } catch (err) {
    if (!(err instanceof SmokeFailure)) throw err;
    return { failed: err.step, reason: err.reason, passed };
  }
}

describe('rendezvous smoke (issue 18)', () => {
  it('passes every step against the local stack, printing each, exit 0', async () => {
    const id = await provision(stack, { uuid: 'smoke-ok' });
    const r = await runCli(['smoke', '--api', stack.apiUrl, '--uuid', 'smoke-ok'], {
      RENDEZVOUS_SECRET: id.secret,
      RENDEZVOUS_RELAY_HTTP: relayHttp(),
    });
    const out = r.stdout.toString();
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    for (const s of SMOKE_STEPS) expect(out).toContain(`smoke: ok  ${s} (`);
    expect(out).toMatch(/smoke: passed\n$/);
    expect(out).not.toContain(id.secret);
  });

  it('runs again at once with the same identity (the codes of the last run are skipped)', async () => {
    // 5-second steps (the otpauth URI carries them), so waiting for unused codes is short.
    const id = await provision(stack, { uuid: 'smoke-twice', params: { step: 5 } });
    expect(id.otpauth).toContain('period=5');
    const first = await smoke({ api: stack.apiUrl, uuid: 'smoke-twice', secret: id.otpauth });
    expect(first.failed).toBeUndefined();
    const again = await smoke({ api: stack.apiUrl, uuid: 'smoke-twice', secret: id.otpauth });
    expect(again.failed).toBeUndefined();
    expect(again.passed).toEqual([...SMOKE_STEPS]);
  }, 60_000);

  it('a wrong secret fails the register step: exit 1, the step named, no secret shown', async () => {
    await provision(stack, { uuid: 'smoke-wrong' });
    // Another secret, with 5-second steps so the three refused steps come quickly.
    const wrong = base32Encode(Buffer.from('not the secret of smoke-wrong'));
    const uri = `otpauth://totp/x:smoke-wrong?secret=${wrong}&period=5&digits=6&algorithm=SHA1`;
    const r = await runCli(['smoke', '--api', stack.apiUrl, '--uuid', 'smoke-wrong'], {
      RENDEZVOUS_SECRET: uri,
      RENDEZVOUS_RELAY_HTTP: relayHttp(),
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^smoke: step "register \(generic\)" failed: authentication failed/);
    expect(r.stderr + r.stdout.toString()).not.toContain(wrong);
  });

  it('an API that does not answer fails the register step', async () => {
    const id = await provision(stack, { uuid: 'smoke-noapi' });
    const r = await smoke({
      api: `http://127.0.0.1:${await closedPort()}/`,
      uuid: 'smoke-noapi',
      secret: id.secret,
    });
    expect(r.failed).toBe('register (generic)');
    expect(r.reason).toMatch(/unreachable/);
  });

  it('a closed relay port fails the generic park step; a closed HTTP port the HTTP park step', async () => {
    // An API whose triples name a relay port nothing listens on.
    const policy: RegistrationPolicy = {
      relayHost: '127.0.0.1',
      relayPort: await closedPort(),
      maxFailuresPerSource: 50,
    };
    const api = await startApiAdapter({
      register: makeRegisterHandler(() => ({ store: stack.store, policy })),
      lookup: makeLookupHandler(() => ({ store: stack.store })),
      port: 0,
    });
    closers.push(() => api.close());
    const a = await provision(stack, { uuid: 'smoke-norelay' });
    const r = await smoke({ api: api.url, uuid: 'smoke-norelay', secret: a.secret });
    expect(r.failed).toBe('park (generic)');
    expect(r.passed).toEqual(['register (generic)']);

    const b = await provision(stack, { uuid: 'smoke-nohttp' });
    const h = await smoke({
      api: stack.apiUrl,
      uuid: 'smoke-nohttp',
      secret: b.secret,
      relayHttp: `http://127.0.0.1:${await closedPort()}`,
    });
    expect(h.failed).toBe('park (http)');
    expect(h.passed).toEqual(SMOKE_STEPS.slice(0, 5));
  });

  it('a CLI call without the secret, or with a bad URL, says what is missing', async () => {
    const none = await runCli(['smoke', '--api', stack.apiUrl, '--uuid', 'x'], {
      RENDEZVOUS_SECRET: '',
      RENDEZVOUS_RELAY_HTTP: relayHttp(),
    });
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/RENDEZVOUS_SECRET is not set/);
    const bad = await runCli(['smoke', '--api', 'nope', '--uuid', 'x'], {
      RENDEZVOUS_SECRET: 'JBSWY3DPEHPK3PXP',
      RENDEZVOUS_RELAY_HTTP: relayHttp(),
    });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/not an http\(s\) URL: nope/);
  });
});

describe('a stranger taking the smoke`s parked connection (issue 26 item 8)', () => {
  /**
   * A stranger who knows the uuid: looks it up as any mobile client may and dials the relay
   * with the look-up's cookie, sending bytes of its own. `forever` keeps a dial waiting, so
   * every new park is taken at once; else it takes one park and stops.
   */
  function stranger(forever: boolean) {
    let stopped = false;
    let taken = 0;
    const sockets: Array<{ destroy(): void }> = [];
    const run = async () => {
      const triple = await lookupWithApi([stack.apiUrl], 'smoke-stolen');
      // Forever: two dials always waiting at the relay, so each re-park meets a stranger queued
      // before the smoke's own mobile side (one loop left a gap while it dialled again, which a
      // loaded machine let the smoke's mobile side win).
      if (forever) await Promise.all([loop(triple), loop(triple)]);
      else await loop(triple);
    };
    const loop = async (triple: Awaited<ReturnType<typeof lookupWithApi>>) => {
      do {
        try {
          const d = await dialRelay(triple, { statusTimeoutMs: 10_000 });
          sockets.push(d.socket);
          d.socket.on('error', () => undefined);
          d.socket.write('a stranger was here\n');
          taken++;
        } catch {
          // Nothing parked within the relay's wait: dial again.
        }
      } while (forever && !stopped);
    };
    return {
      start: () => run(),
      taken: () => taken,
      stop: () => {
        stopped = true;
        for (const s of sockets) s.destroy();
      },
    };
  }

  async function smokeWithStranger(forever: boolean) {
    const id = await provision(stack, { uuid: 'smoke-stolen', params: { step: 5 } });
    const thief = stranger(forever);
    const passed: SmokeStep[] = [];
    let running: Promise<void> | undefined;
    try {
      await runSmoke({
        api: stack.apiUrl,
        uuid: 'smoke-stolen',
        secret: id.otpauth,
        relayHttp: relayHttp(),
        stepTimeoutMs: 8_000,
        onStep: async (s) => {
          passed.push(s);
          // Right after the park: the stranger takes it before the smoke's own mobile side dials.
          if (s === 'park (generic)') {
            running = thief.start();
            if (!forever) await running;
            else await waitFor(() => thief.taken() > 0, 10_000);
          }
        },
      });
      return { failure: undefined, passed, taken: thief.taken() };
    } catch (err) {
      if (!(err instanceof SmokeFailure)) throw err;
      return { failure: err, passed, taken: thief.taken() };
    } finally {
      thief.stop();
      await running?.catch(() => undefined);
      await stack.store.deleteIdentity('smoke-stolen').catch(() => undefined);
    }
  }

  it('one stolen pairing: the smoke parks again and passes', async () => {
    const r = await smokeWithStranger(false);
    expect(r.taken).toBe(1);
    expect(r.failure).toBeUndefined();
    expect(r.passed).toEqual([...SMOKE_STEPS]);
  }, 120_000);

  it('a stranger taking every park: the pair step fails, naming the cause', async () => {
    const r = await smokeWithStranger(true);
    expect(r.failure?.step).toBe('pair (generic)');
    expect(r.failure?.reason).toContain('another client took the parked connection 3 times');
    expect(r.taken).toBeGreaterThanOrEqual(3);
  }, 120_000);
});

describe('a stranger taking the smoke`s parked HTTP connection (issue 26 item 8)', () => {
  it('the parked side tells the stranger`s request from its own, parks again, and passes', async () => {
    const id = await provision(stack, { uuid: 'smoke-stolen-http', params: { step: 5 } });
    const strangers: Array<{ destroy(): void }> = [];
    let strangerAnswer = '';
    const passed: SmokeStep[] = [];
    try {
      await runSmoke({
        api: stack.apiUrl,
        uuid: 'smoke-stolen-http',
        secret: id.otpauth,
        relayHttp: relayHttp(),
        stepTimeoutMs: 8_000,
        onStep: async (s) => {
          passed.push(s);
          if (s !== 'park (http)') return;
          // Right after the park: a stranger's request naming the uuid takes the parked socket.
          const sock = await dial(stack.httpPort);
          strangers.push(sock);
          sock.on('data', (c: Buffer) => {
            strangerAnswer += c.toString();
          });
          sock.write('GET /mine?rendezvous=smoke-stolen-http HTTP/1.1\r\nHost: x\r\n\r\n');
          const health = stack.relay.healthAddress?.port as number;
          await waitFor(async () => (await parkedOnHealth(health)) === 0, 10_000, 'the park taken');
        },
      });
    } finally {
      for (const s of strangers) s.destroy();
      await stack.store.deleteIdentity('smoke-stolen-http').catch(() => undefined);
    }
    expect(passed).toEqual([...SMOKE_STEPS]);
    // The stranger never reached the smoke's HTTP target.
    expect(strangerAnswer).not.toContain('x-smoke-sha256');
  }, 120_000);
});
