/**
 * What a person watching `rendezvous expose` and `rendezvous connect` sees (issue 17), with the
 * real CLI processes: the JSON records (schema of core/log.ts, service `agent` / `connect`), the
 * health line (`--status-every`, SIGUSR2), the target going down (WARN, and `target=down` on the
 * next parks), and never a secret, code or cookie on stderr. First against a raw-socket fake relay
 * that offers the wire options (so the lines the agent sends are asserted byte for byte), then
 * end to end against `rendezvous dev`.
 */
import type { ChildProcess } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { codeForStep, newTotpSecret, TOTP_DEFAULTS, timeStep } from '../../core/totp.js';
import { runCli, spawnCli, stop, waitForOutput } from '../support/cli.js';
import { fakeApi, fakeGenericRelay, pair, restartableEcho } from '../support/fake-relay.js';
import { dial, readAll } from '../support/net.js';
import { SecretLedger } from '../support/secrets.js';
import { waitFor } from '../support/wait.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** Every stderr byte of a child, as it comes. */
function stderrOf(child: ChildProcess): () => string {
  let text = '';
  child.stderr?.on('data', (c: Buffer) => {
    text += c.toString();
  });
  return () => text;
}

/** The codes of `secret` (default parameters) for the steps around the test's run. */
function codesAround(secret: string, fromMs: number): string[] {
  const p = { secret, ...TOTP_DEFAULTS };
  const out: string[] = [];
  for (let s = timeStep(p, fromMs) - 2; s <= timeStep(p, Date.now()) + 2; s++) out.push(codeForStep(p, s));
  return out;
}

const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const RID = 'Zyxwvuts_-987654';

/** Parses JSON log lines and checks each against the schema: time, level, service, msg first. */
function records(text: string, service: string): Array<Record<string, unknown>> {
  const lines = text.split('\n').filter(Boolean);
  return lines.map((line) => {
    const r = JSON.parse(line) as Record<string, unknown>;
    expect(Object.keys(r).slice(0, 4)).toEqual(['time', 'level', 'service', 'msg']);
    expect(r.time).toMatch(ISO_UTC);
    expect(['INFO', 'WARN', 'ERROR']).toContain(r.level);
    expect(r.service).toBe(service);
    expect(typeof r.msg).toBe('string');
    return r;
  });
}

describe('expose --log-format json against a relay that offers rid and target (fake relay)', () => {
  it('records parks, the rendezvous with its rid, health lines and the target going down; no secret', async () => {
    const startedAt = Date.now();
    const target = await restartableEcho(cleanup);
    const relay = await fakeGenericRelay(cleanup);
    const cookie = 'cookieCLIJSONCLIJSON0123';
    const api = await fakeApi(cleanup, relay.port, cookie, ['rid', 'target']);
    const secret = newTotpSecret();
    const agent = spawnCli(
      [
        'expose',
        '--uuid',
        'obs-json',
        '--to',
        `127.0.0.1:${target.port}`,
        '--api',
        api.url,
        '--log-format',
        'json',
        '--probe-every',
        '1',
        '--status-every',
        '1',
      ],
      { RENDEZVOUS_SECRET: secret },
    );
    cleanup.push(() => stop(agent));
    const stderr = stderrOf(agent);
    const out: Buffer[] = [];
    agent.stdout?.on('data', (c: Buffer) => out.push(c));

    await waitFor(() => relay.parks.length === 1, 20_000, 'first park');
    expect(relay.parks[0]?.line).toBe(`R${cookie} rid target=up`);
    // --status-every 1: health lines come by themselves.
    await waitFor(() => (stderr().match(/"event":"health"/g) ?? []).length >= 2, 20_000, 'two health lines');

    expect(await pair(relay.parks[0] as (typeof relay.parks)[0], `+OK rid=${RID}`, 'ping')).toBe('ping');
    await waitFor(() => stderr().includes('"event":"rendezvous"'), 20_000, 'rendezvous record');
    await waitFor(() => relay.parks.length === 2, 20_000, 're-park');

    // A health line at once on SIGUSR2, with the rendezvous in it.
    await waitFor(
      () => {
        agent.kill('SIGUSR2');
        return /"event":"health"[^\n]*"served":1/.test(stderr());
      },
      20_000,
      'a health line with served=1',
    );

    await target.close();
    await waitFor(
      () => relay.open()?.line.endsWith('target=down') === true,
      20_000,
      'a park with target=down',
    );
    await waitFor(() => stderr().includes('"msg":"target down"'), 20_000, 'the WARN');
    await stop(agent);

    expect(Buffer.concat(out).toString()).toBe(''); // records go to stderr only
    const all = records(stderr(), 'agent');
    expect(all.find((r) => r.event === 'rendezvous')).toMatchObject({
      level: 'INFO',
      msg: 'rendezvous ended',
      rid: RID,
      uuid: 'obs-json',
      protocol: 'generic',
      relay: `127.0.0.1:${relay.port}`,
      bytesToHidden: 4,
      bytesToMobile: 4,
      end: 'closed',
    });
    expect(all.find((r) => r.event === 'park')).toMatchObject({
      level: 'INFO',
      msg: 'parked',
      relay: `127.0.0.1:${relay.port}`,
      protocol: 'generic',
      target: 'up',
    });
    expect(all.find((r) => r.msg === 're-parked')).toMatchObject({ after: 'rendezvous' });
    const health = all.filter((r) => r.event === 'health');
    expect(health[0]).toMatchObject({
      level: 'INFO',
      msg: 'health',
      uuid: 'obs-json',
      served: 0,
      live: 0,
      failed: 0,
      last: 'never',
      target: 'up',
      lastError: 'none',
      parked: `127.0.0.1:${relay.port}=1`,
    });
    const after = health.find((r) => r.served === 1);
    expect(after).toMatchObject({ bytesToHidden: 4, bytesToMobile: 4, lastEnd: 'closed', lastRid: RID });
    expect(after?.last).toMatch(ISO_UTC);
    expect(after?.uptime).toMatch(/^\d+s$/);
    expect(all.filter((r) => r.event === 'target')).toEqual([
      expect.objectContaining({ level: 'WARN', msg: 'target down', target: `127.0.0.1:${target.port}` }),
    ]);

    const ledger = new SecretLedger();
    ledger.add(secret, cookie, ...api.codes, ...codesAround(secret, startedAt));
    expect(api.codes.filter(Boolean).length).toBeGreaterThan(0);
    expect(ledger.leakedIn(stderr())).toEqual([]);
  }, 90_000);
});

describe('the new flags', () => {
  it('a bad --status-every, --probe-every or --log-format is one usage line with exit 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [
        ['expose', '--uuid', 'u', '--to', '22', '--status-every', 'abc'],
        /--status-every <seconds>' argument 'abc' is invalid/,
      ],
      [
        ['expose', '--uuid', 'u', '--to', '22', '--probe-every', '-1'],
        /--probe-every <seconds>' argument '-1' is invalid/,
      ],
      [['connect', '--uuid', 'u', '--log-format', 'xml'], /--log-format <format>' argument 'xml' is invalid/],
    ];
    const results = await Promise.all(
      cases.map(([args]) =>
        runCli(args, { RENDEZVOUS_API: 'http://127.0.0.1:9', RENDEZVOUS_SECRET: 'JBSWY3DPEHPK3PXP' }, ''),
      ),
    );
    cases.forEach(([args, message], i) => {
      const r = results[i] as (typeof results)[number];
      const what = `rendezvous ${args.join(' ')}: ${r.stderr}`;
      expect(r.code, what).toBe(2);
      expect(r.stderr, what).toMatch(message);
      expect(r.stderr.trimEnd().split('\n'), what).toHaveLength(1);
    });
  }, 90_000);
});

describe('expose and connect end to end against rendezvous dev', () => {
  let dev: ChildProcess;
  let devOut = '';
  const env: Record<string, string> = {};

  beforeAll(async () => {
    dev = spawnCli(
      ['dev', '--memory', '--api-port', '0', '--relay-port', '0', '--http-port', '0', '--store-port', '0'],
      { RELAY_HEALTH_PORT: '0' },
    );
    devOut = await waitForOutput(dev, /^ready$/m, 30_000);
    const out = devOut;
    for (const m of out.matchAll(/^ {2}export (\w+)=(.*)$/gm)) env[m[1] as string] = m[2] as string;
  });
  afterAll(() => stop(dev));

  it('a rendezvous is logged by both, SIGUSR2 prints the health line, a stopped target is a WARN', async () => {
    const startedAt = Date.now();
    const target = await restartableEcho(cleanup);
    const p = await runCli(['provision', '--uuid', 'obs-e2e', '--json'], env);
    expect(p.code, p.stderr).toBe(0);
    const secret = JSON.parse(p.stdout.toString()).secret as string;
    const agent = spawnCli(['expose', '--uuid', 'obs-e2e', '--to', String(target.port)], {
      ...env,
      RENDEZVOUS_SECRET: secret,
    });
    cleanup.push(() => stop(agent));
    const stderr = stderrOf(agent);
    await waitFor(() => / parked relay=/.test(stderr()), 20_000, 'the parked line');

    // connect on stdio with --log-format json: its record on stderr, the echo alone on stdout.
    const r = await runCli(
      ['connect', '--uuid', 'obs-e2e', '--log-format', 'json'],
      env,
      'through the relay',
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.toString()).toBe('through the relay');
    const [mobile] = records(r.stderr, 'connect');
    expect(mobile).toMatchObject({
      level: 'INFO',
      msg: 'rendezvous ended',
      event: 'rendezvous',
      uuid: 'obs-e2e',
      bytesToHidden: 17,
      bytesToMobile: 17,
      end: 'closed',
    });
    await waitFor(() => stderr().includes(' rendezvous ended '), 20_000, "the agent's record");
    const line = stderr()
      .split('\n')
      .find((l) => l.includes(' rendezvous ended ')) as string;
    expect(line).toMatch(
      /^expose: \d\d:\d\d:\d\dZ rendezvous ended uuid=obs-e2e rid=[\w-]{16} protocol=generic relay=127\.0\.0\.1:\d+ bytesToHidden=17 bytesToMobile=17 durationMs=\d+ end=closed$/,
    );

    // The correlation id: the same in both records where the relay offers it (the API answer lists
    // `rid` in relayOptions), and offered here.
    const lookup = (await (await fetch(`${env.RENDEZVOUS_API}/?uuid=obs-e2e`)).json()) as {
      result: { cookie: string; relayOptions?: string[] };
    };
    const agentRid = /rid=([\w-]+)/.exec(line)?.[1];
    expect(lookup.result.relayOptions).toEqual(['rid', 'target', 'direct']);
    expect(mobile?.rid).toMatch(/^[A-Za-z0-9_-]{16}$/);
    expect(agentRid).toBe(mobile?.rid);

    // SIGUSR2: one health line at once.
    await waitFor(
      () => {
        agent.kill('SIGUSR2');
        return / health /.test(stderr());
      },
      20_000,
      'a health line',
    );
    const health = stderr()
      .split('\n')
      .find((l) => l.includes(' health ')) as string;
    expect(health).toMatch(
      /^expose: \d\d:\d\d:\d\dZ health uuid=obs-e2e protocol=generic uptime=\d+s parked=127\.0\.0\.1:\d+=1 served=1 live=0 failed=0 bytesToHidden=17 bytesToMobile=17 last=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z lastEnd=closed lastRid=[\w-]{16} target=up lastError=none$/,
    );

    // connect --listen logs each rendezvous's end as a text line for people.
    const listener = spawnCli(['connect', '--uuid', 'obs-e2e', '--listen', '127.0.0.1:0'], env);
    cleanup.push(() => stop(listener));
    const listenErr = stderrOf(listener);
    await waitFor(() => /listening on 127\.0\.0\.1:\d+/.test(listenErr()), 20_000, 'connect --listen');
    const local = await dial(Number(/listening on 127\.0\.0\.1:(\d+)/.exec(listenErr())?.[1]));
    const echoed = readAll(local);
    local.end('via --listen');
    expect((await echoed).toString()).toBe('via --listen');
    await waitFor(() => listenErr().includes(' rendezvous ended '), 20_000, "connect --listen's record");
    expect(listenErr()).toMatch(
      /^connect: \d\d:\d\d:\d\dZ rendezvous ended rid=[\w-]{16} uuid=obs-e2e bytesToHidden=12 bytesToMobile=12 durationMs=\d+ end=closed$/m,
    );

    // The target stops: the next rendezvous fails, the agent says why, once.
    await target.close();
    const down = await runCli(['connect', '--uuid', 'obs-e2e'], env, 'anyone?');
    expect(down.code).toBe(1);
    await waitFor(() => stderr().includes('warn: target down'), 20_000, 'the WARN');
    expect(stderr()).toMatch(
      /^expose: \d\d:\d\d:\d\dZ warn: target down target=127\.0\.0\.1:\d+ reason=connect ECONNREFUSED/m,
    );
    expect(stderr()).toMatch(/warn: rendezvous ended .* end=target_unreachable reason=connect ECONNREFUSED/);

    const ledger = new SecretLedger();
    ledger.add(secret, lookup.result.cookie, ...codesAround(secret, startedAt));
    expect(ledger.leakedIn(stderr() + r.stderr + down.stderr + listenErr())).toEqual([]);
  }, 150_000);

  it('with RELAY_HEALTH_PORT, dev serves /healthz and Prometheus /metrics that count what happened', async () => {
    const url = /^ {2}health (http:\/\/[\d.]+:\d+)\/healthz and \/metrics$/m.exec(devOut)?.[1];
    expect(url).toBeDefined();
    expect(((await (await fetch(`${url}/healthz`)).json()) as { ok: boolean }).ok).toBe(true);
    const res = await fetch(`${url}/metrics`);
    expect(res.headers.get('content-type')).toContain('text/plain; version=0.0.4');
    const text = await res.text();
    const value = (series: string) =>
      Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(text)?.[1]);
    // The test above paired at least twice (stdio, --listen) through this relay, locally.
    expect(value('rendezvous_relay_pairings_total{path="local",protocol="generic"}')).toBeGreaterThanOrEqual(
      2,
    );
    expect(value('rendezvous_relay_parked_sockets{protocol="generic"}')).toBeGreaterThanOrEqual(0);
  });
});
