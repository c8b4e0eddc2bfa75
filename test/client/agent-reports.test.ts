/**
 * What the agent reports (issue 17): each park and re-park, each rendezvous's end (rid, bytes,
 * duration, outcome), the target going down and up, the health snapshot — and the wire options
 * it sends for them. The relay here is a raw-socket fake that speaks the documented lines
 * (`R<c> rid target=up` → `+OK rid=<rid>`; CONNECT with `Rendezvous-Target`, a forwarded head
 * with `Rendezvous-Id`), because those lines are what is under test from the agent's side; the
 * same agent against the real relay is in test/cli/agent-observability.test.ts.
 */
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentEvent } from '../../client/agent-report.js';
import { probeTarget } from '../../client/expose.js';
import { exposeHiddenServer, type HiddenServer } from '../../client/hidden-server.js';
import { cookieLineText, parseOkOptions } from '../../client/relay-conn.js';
import { type LogRecord, memoryLog } from '../../core/log.js';
import { newTotpSecret } from '../../core/totp.js';
import { type FakePark, fakeApi, fakeGenericRelay, pair, restartableEcho } from '../support/fake-relay.js';
import { waitFor } from '../support/wait.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function agentWithReports(opts: Parameters<typeof exposeHiddenServer>[0]) {
  const records: LogRecord[] = [];
  const events: AgentEvent[] = [];
  const agent: HiddenServer = exposeHiddenServer({ ...opts, log: memoryLog('agent', records) });
  agent.on('report', (e: AgentEvent) => events.push(e));
  agent.on('error', () => undefined);
  cleanup.push(() => agent.close());
  return { agent, records, events };
}

const RID = 'AbCdEfGh_-012345';

describe('the generic park line and its options', () => {
  it('the cookie line carries options only when the API answer lists them', () => {
    const t = { host: 'h', port: 1, cookie: 'Rabc' };
    expect(cookieLineText(t, 'up')).toBe('Rabc');
    expect(cookieLineText({ ...t, relayOptions: ['rid', 'target'] } as never, 'down')).toBe(
      'Rabc rid target=down',
    );
    expect(cookieLineText({ ...t, relayOptions: ['rid', 'target'] } as never)).toBe('Rabc rid');
    expect(cookieLineText({ ...t, cookie: 'Iabc', relayOptions: ['rid', 'target'] } as never, 'up')).toBe(
      'Iabc rid',
    );
    expect(cookieLineText({ ...t, relayOptions: ['target', 'bad option!'] } as never, 'up')).toBe(
      'Rabc target=up',
    );
  });

  it('+OK options are parsed; tokens of another shape are ignored', () => {
    expect(parseOkOptions('+OK')).toEqual({});
    expect(parseOkOptions(`+OK rid=${RID}`)).toEqual({ rid: RID });
    expect(parseOkOptions(`+OK future rid=${RID} x=<bad>`)).toEqual({ future: '', rid: RID });
  });
});

describe('expose against a relay that offers rid and target (fake relay, real sockets)', () => {
  it('parks with rid and target=up, logs the rendezvous with its rid and bytes, re-parks', async () => {
    const target = await restartableEcho(cleanup);
    const relay = await fakeGenericRelay(cleanup);
    const cookie = 'cookieABCDEFGHIJKLMNOP';
    const api = await fakeApi(cleanup, relay.port, cookie, ['rid', 'target']);
    const secret = newTotpSecret();
    const { agent, records, events } = agentWithReports({
      api: api.url,
      uuid: 'rep-generic',
      secret,
      target: { host: '127.0.0.1', port: target.port },
      probeEveryMs: 60_000,
    });
    await waitFor(() => relay.parks.length === 1, 10_000, 'first park');
    expect(relay.parks[0]?.line).toBe(`R${cookie} rid target=up`);

    const echoed = await pair(relay.parks[0] as FakePark, `+OK rid=${RID}`, 'hello, target');
    expect(echoed).toBe('hello, target');
    await waitFor(() => events.some((e) => e.event === 'rendezvous'), 10_000, 'rendezvous record');
    await waitFor(() => relay.parks.length === 2, 10_000, 're-park');
    expect(relay.parks[1]?.line).toBe(`R${cookie} rid target=up`);

    const end = records.find((r) => r.event === 'rendezvous');
    expect(end).toMatchObject({
      level: 'INFO',
      service: 'agent',
      msg: 'rendezvous ended',
      rid: RID,
      uuid: 'rep-generic',
      protocol: 'generic',
      relay: `127.0.0.1:${relay.port}`,
      bytesToHidden: 13,
      bytesToMobile: 13,
      end: 'closed',
    });
    expect(typeof end?.durationMs).toBe('number');
    const parks = records.filter((r) => r.event === 'park');
    expect(parks[0]).toMatchObject({
      msg: 'parked',
      relay: `127.0.0.1:${relay.port}`,
      target: 'up',
      slot: 0,
    });
    await waitFor(() => records.filter((r) => r.event === 'park').length === 2, 5_000, 're-park record');
    expect(records.filter((r) => r.event === 'park')[1]).toMatchObject({
      msg: 're-parked',
      after: 'rendezvous',
    });

    const st = agent.status();
    expect(st).toMatchObject({
      uuid: 'rep-generic',
      protocol: 'generic',
      parked: { [`127.0.0.1:${relay.port}`]: 1 },
      served: 1,
      live: 0,
      failed: 0,
      bytesToHidden: 13,
      bytesToMobile: 13,
      target: 'up',
      lastRendezvous: { end: 'closed', rid: RID },
    });
    expect(st.lastRendezvous?.at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(st.lastError).toBeUndefined();

    // Never a secret, code or cookie in any record.
    const all = JSON.stringify(records);
    for (const s of [secret, cookie, ...api.codes.filter(Boolean)]) expect(all).not.toContain(s);
  });

  it('a stranger starting rendezvous at will cannot fill the disk: 120 records a minute, every one counted', async () => {
    const target = await restartableEcho(cleanup);
    const relay = await fakeGenericRelay(cleanup);
    const api = await fakeApi(cleanup, relay.port, 'cookieFLOODFLOODFLOODFL', ['rid', 'target']);
    const { agent, records, events } = agentWithReports({
      api: api.url,
      uuid: 'rep-flood',
      secret: newTotpSecret(),
      target: { host: '127.0.0.1', port: target.port },
      probeEveryMs: 60_000,
    });
    for (let i = 0; i < 130; i++) {
      await waitFor(() => relay.open() !== undefined, 10_000, `park ${i}`);
      expect(await pair(relay.open() as FakePark, `+OK rid=${RID}`, 'x')).toBe('x');
    }
    await waitFor(
      () => events.filter((e) => e.event === 'rendezvous').length === 130,
      10_000,
      'every end reported',
    );
    expect(records.filter((r) => r.event === 'rendezvous')).toHaveLength(120);
    expect(agent.status()).toMatchObject({ served: 130, bytesToHidden: 130, bytesToMobile: 130 });
  }, 60_000);

  it('the probe closes politely: a target that greets first (an sshd banner) sees no reset', async () => {
    const errors: string[] = [];
    const greeter = createServer((sock) => {
      sock.on('error', (err) => errors.push(err.message));
      sock.end('SSH-2.0-OpenSSH_9.2\r\n');
    });
    await new Promise<void>((r) => greeter.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise((r) => greeter.close(r)));
    const port = (greeter.address() as AddressInfo).port;
    for (let i = 0; i < 30; i++) expect((await probeTarget({ host: '127.0.0.1', port })).state).toBe('up');
    await new Promise((r) => setTimeout(r, 300));
    expect(errors).toEqual([]);
  });

  it('a target that stops: WARN once, target_unreachable, target=down on the next parks, INFO when back', async () => {
    const target = await restartableEcho(cleanup);
    const relay = await fakeGenericRelay(cleanup);
    const api = await fakeApi(cleanup, relay.port, 'cookieDOWNDOWNDOWNDOWN', ['rid', 'target']);
    const { agent, records, events } = agentWithReports({
      api: api.url,
      uuid: 'rep-down',
      secret: newTotpSecret(),
      target: { host: '127.0.0.1', port: target.port },
      probeEveryMs: 200,
    });
    await waitFor(() => relay.parks.length === 1, 10_000, 'first park');
    expect(relay.parks[0]?.line).toMatch(/ rid target=up$/);

    await target.close();
    // A rendezvous while the target is down: the mobile side gets a reset, the record says why.
    const echoed = await pair(relay.open() as FakePark, `+OK rid=${RID}`, 'anyone?');
    expect(echoed).toBe('');
    await waitFor(() => events.some((e) => e.event === 'rendezvous'), 10_000, 'rendezvous record');
    expect(records.find((r) => r.event === 'rendezvous')).toMatchObject({
      level: 'WARN',
      rid: RID,
      end: 'target_unreachable',
      reason: expect.stringContaining('ECONNREFUSED'),
    });
    await waitFor(
      () => relay.open()?.line.endsWith('target=down') === true,
      10_000,
      'a park with target=down',
    );
    const downs = records.filter((r) => r.event === 'target');
    expect(downs).toHaveLength(1);
    expect(downs[0]).toMatchObject({ level: 'WARN', msg: 'target down', target: `127.0.0.1:${target.port}` });
    expect(agent.status()).toMatchObject({ target: 'down', served: 1, failed: 1 });
    expect(agent.status().lastRendezvous?.end).toBe('target_unreachable');

    // Back on the same port: the idle probe notices, logs INFO, and re-parks with target=up.
    const back = await restartableEcho(cleanup, target.port);
    expect(back.port).toBe(target.port);
    await waitFor(() => relay.open()?.line.endsWith('target=up') === true, 10_000, 'a park with target=up');
    expect(records.filter((r) => r.event === 'target').map((r) => [r.level, r.msg])).toEqual([
      ['WARN', 'target down'],
      ['INFO', 'target up'],
    ]);
    expect(records.filter((r) => r.event === 'park').some((r) => r.after === 'target_changed')).toBe(true);
    expect(agent.status().target).toBe('up');
  });

  it('the probe alone finds a stopped target while idle and re-parks with target=down', async () => {
    const target = await restartableEcho(cleanup);
    const relay = await fakeGenericRelay(cleanup);
    const api = await fakeApi(cleanup, relay.port, 'cookiePROBEPROBEPROBE', ['rid', 'target']);
    const { records } = agentWithReports({
      api: api.url,
      uuid: 'rep-probe',
      secret: newTotpSecret(),
      target: { host: '127.0.0.1', port: target.port },
      probeEveryMs: 200,
    });
    await waitFor(() => relay.parks.length === 1, 10_000, 'first park');
    await target.close();
    await waitFor(
      () => relay.open()?.line.endsWith('target=down') === true,
      10_000,
      'a park with target=down',
    );
    expect(records.filter((r) => r.event === 'target').map((r) => r.msg)).toEqual(['target down']);
    // The recycled park was ended by the agent, not refused: no error recorded.
    expect(records.filter((r) => r.event === 'error')).toEqual([]);
  });
});

describe('expose against an original relay (no relayOptions in the API answer)', () => {
  it('sends exactly R<cookie>, takes a plain +OK, and logs the rendezvous without a rid', async () => {
    const target = await restartableEcho(cleanup);
    const relay = await fakeGenericRelay(cleanup);
    const api = await fakeApi(cleanup, relay.port, 'cookieORIGINALORIGINAL');
    const { records, events } = agentWithReports({
      api: api.url,
      uuid: 'rep-orig',
      secret: newTotpSecret(),
      target: { host: '127.0.0.1', port: target.port },
    });
    await waitFor(() => relay.parks.length === 1, 10_000, 'first park');
    expect(relay.parks[0]?.line).toBe('RcookieORIGINALORIGINAL');
    expect(await pair(relay.parks[0] as FakePark, '+OK', 'plain')).toBe('plain');
    await waitFor(() => events.some((e) => e.event === 'rendezvous'), 10_000, 'rendezvous record');
    const end = records.find((r) => r.event === 'rendezvous');
    expect(end).toMatchObject({ end: 'closed', bytesToHidden: 5, bytesToMobile: 5 });
    expect(end && 'rid' in end).toBe(false);
  });
});

describe('expose --protocol http against a relay that forwards Rendezvous-Id', () => {
  it('sends Rendezvous-Target on CONNECT and logs the rid of the forwarded head', async () => {
    const target = await restartableEcho(cleanup);
    const connects: FakePark[] = [];
    const relay = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('error', () => undefined);
      let buf = '';
      const onData = (c: Buffer) => {
        buf += c.toString('latin1');
        if (!buf.includes('\r\n\r\n')) return;
        socket.off('data', onData);
        socket.pause();
        connects.push({ line: buf, socket });
        socket.write('HTTP/1.1 200 OK\r\nRendezvous-Cookie: httpcookieXYZXYZXYZ\r\n\r\n');
      };
      socket.on('data', onData);
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    cleanup.push(
      () =>
        new Promise<void>((r) => {
          for (const c of connects) c.socket.destroy();
          relay.close(() => r());
        }),
    );
    const port = (relay.address() as AddressInfo).port;
    const { records, events } = agentWithReports({
      protocol: 'http',
      relay: `http://127.0.0.1:${port}`,
      uuid: 'rep-http',
      secret: newTotpSecret(),
      target: { host: '127.0.0.1', port: target.port },
    });
    await waitFor(() => connects.length === 1, 10_000, 'CONNECT');
    expect(connects[0]?.line).toMatch(/^CONNECT uuid:rep-http\?response=\d+ HTTP\/1\.1\r\n/);
    expect(connects[0]?.line).toContain('\r\nRendezvous-Target: up\r\n');
    const head = `GET / HTTP/1.1\r\nHost: x\r\nRendezvous-Id: ${RID}\r\nConnection: close\r\n\r\n`;
    const s = connects[0]?.socket as Socket;
    const got: Buffer[] = [];
    s.on('data', (c: Buffer) => got.push(c));
    s.resume();
    s.end(head);
    await new Promise<void>((r) => s.once('close', () => r()));
    // The head reaches the target untouched (the echo sends it back).
    expect(Buffer.concat(got).toString('latin1')).toBe(head);
    await waitFor(() => events.some((e) => e.event === 'rendezvous'), 10_000, 'rendezvous record');
    expect(records.find((r) => r.event === 'rendezvous')).toMatchObject({
      rid: RID,
      protocol: 'http',
      relay: `127.0.0.1:${port}`,
      bytesToHidden: head.length,
      bytesToMobile: head.length,
      end: 'closed',
    });
    await waitFor(() => connects.length === 2, 10_000, 're-park with the cookie');
    expect(connects[1]?.line).toMatch(/^CONNECT uuid:rep-http\?cookie=httpcookieXYZXYZXYZ HTTP\/1\.1\r\n/);
    expect(connects[1]?.line).toContain('\r\nRendezvous-Target: up\r\n');
    expect(JSON.stringify(records)).not.toContain('httpcookieXYZXYZXYZ');
  });
});
