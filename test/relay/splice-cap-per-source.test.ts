/**
 * Issue 26 item 3: anyone who knows a uuid (and, for the generic protocol, its public `I` cookie)
 * could fill its cap of live rendezvous from one address and hold it with idle pairings; the
 * legitimate client then got `too many live rendezvous for this hidden server` for up to the idle
 * timeout. A per-source cap below the per-hidden-server one leaves room for everyone else.
 * Sources are loopback addresses (Linux routes all of 127/8 on lo): 127.0.0.3 is the stranger,
 * 127.0.0.2 the legitimate client.
 */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { RELAY_DEFAULTS } from '../../relay/server.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial } from '../support/net.js';
import { waitFor } from '../support/wait.js';

type Cluster = Awaited<ReturnType<typeof startCluster>>;

/** Hidden-side sockets parked for the test (more than the per-hidden-server cap). */
const PARKS = 110;
/** Idle pairings the stranger tries to hold. */
const STRANGER = 100;

let c: Cluster;
const opened: Socket[] = [];

/** Connects from `local`, sends `payload`, resolves with the socket and the first answer's text. */
function ask(
  local: string,
  port: number,
  payload: string,
  until: RegExp,
): Promise<{ s: Socket; text: string }> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, localAddress: local, allowHalfOpen: true });
    opened.push(s);
    let text = '';
    const done = () => {
      clearTimeout(t);
      resolve({ s, text });
    };
    const t = setTimeout(done, 15_000);
    s.on('connect', () => s.write(payload));
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (until.test(text)) done();
    });
    s.on('error', () => {});
    s.once('close', done);
  });
}

beforeAll(async () => {
  // The deployed per-source default (the cluster helper lifts it for tests that are not about it).
  c = await startCluster(1, {
    relay: {
      maxParkedPerKey: 256,
      pairWaitMs: 1_000,
      maxSplicesPerSource: RELAY_DEFAULTS.maxSplicesPerSource,
    },
  });
});
afterAll(async () => {
  for (const s of opened) s.destroy();
  // The relay's bookkeeping of 200 closing sockets (park records in the store) settles before the
  // store closes: a write landing after it would fail inside the embedded store.
  await waitFor(
    () => (c?.relays[0]?.lot.size ?? 0) === 0 && (c?.relays[0]?.splices ?? 0) === 0,
    20_000,
    'closed',
  );
  await new Promise((r) => setTimeout(r, 1_500));
  await c?.close();
});

describe('regression: one source filled a hidden server’s cap of live rendezvous (issue 26.3)', () => {
  it('generic: 100 idle +OKs from one address, and a client from another address still pairs', async () => {
    const uuid = 'capped-generic';
    const id = await provisionIdentity(c.store, { uuid });
    const put = await fetch(`${c.apiUrl}/?uuid=${uuid}&response=${currentCode(id)}`, { method: 'PUT' });
    const r = ((await put.json()) as { result: { cookie: string } }).result.cookie;
    const i = ((await (await fetch(`${c.apiUrl}/?uuid=${uuid}`)).json()) as { result: { cookie: string } })
      .result.cookie;
    const port = c.relays[0]?.address.port as number;
    for (let k = 0; k < PARKS; k++) {
      const s = await dial(port);
      opened.push(s);
      s.on('error', () => {});
      s.write(`${r}\n`);
    }
    await waitFor(() => (c.relays[0]?.lot.sizeOf('generic') ?? 0) >= PARKS, 10_000, 'parked');

    const stranger = await Promise.all(
      Array.from({ length: STRANGER }, () => ask('127.0.0.3', port, `${i}\n`, /\n/)),
    );
    const oks = stranger.filter((a) => a.text.startsWith('+OK')).length;
    const refused = stranger.filter((a) => a.text.startsWith('-ERR'));
    expect(oks).toBeGreaterThan(0);
    expect(oks).toBeLessThan(STRANGER);
    expect(refused[0]?.text).toMatch(
      /^-ERR too many live rendezvous for this hidden server from your address/,
    );

    const legit = await ask('127.0.0.2', port, `${i}\n`, /\n/);
    expect(legit.text).toMatch(/^\+OK/);
  });

  it('HTTP: 100 idle requests from one address, and a request from another address still reaches it', async () => {
    const uuid = 'capped-http';
    const id = await provisionIdentity(c.store, { uuid });
    const port = c.relays[0]?.httpAddress?.port as number;
    let cookie = '';
    // Hidden side: raw parked sockets that answer only the legitimate request (the stranger's stay idle).
    for (let k = 0; k < PARKS; k++) {
      const s = await dial(port);
      opened.push(s);
      s.on('error', () => {});
      s.write(
        `CONNECT uuid:${uuid}?${cookie ? `cookie=${cookie}` : `response=${currentCode(id)}`} HTTP/1.1\r\n\r\n`,
      );
      const head = await new Promise<string>((res) =>
        s.once('data', (d: Buffer) => res(d.toString('latin1'))),
      );
      if (!head.startsWith('HTTP/1.1 200')) throw new Error(`park refused: ${head}`);
      cookie ||= /Rendezvous-Cookie: (\S+)/.exec(head)?.[1] ?? '';
      s.on('data', (d: Buffer) => {
        if (d.toString('latin1').startsWith('GET /legit'))
          s.end('HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nI am here');
      });
    }
    await waitFor(() => (c.relays[0]?.lot.count('http', uuid) ?? 0) >= PARKS, 10_000, 'parked');

    const get = (path: string) => `GET ${path}?rendezvous=${uuid} HTTP/1.1\r\nHost: r\r\n\r\n`;
    // A paired request gets no answer (its hidden side stays idle); a refused one gets a 503.
    const relay = c.relays[0];
    const before = relay?.splices ?? 0;
    const answers: string[] = [];
    for (let k = 0; k < STRANGER; k++)
      void ask('127.0.0.3', port, get('/idle'), /\r\n\r\n/).then((a) => answers.push(a.text));
    const paired = () => (relay?.splices ?? 0) - before;
    await waitFor(() => answers.length + paired() === STRANGER, 20_000, 'every request paired or answered');
    expect(paired()).toBeGreaterThan(0);
    expect(paired()).toBeLessThan(STRANGER);
    expect(answers.every((t) => t.startsWith('HTTP/1.1 503 '))).toBe(true);
    expect(answers[0]).toContain('too many live rendezvous for this hidden server from your address');

    const legit = await ask('127.0.0.2', port, get('/legit'), /I am here/);
    expect(legit.text).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*I am here$/);
  });
});
