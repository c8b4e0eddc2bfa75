/**
 * The package's library API against the local stack, as an application would use it:
 * `createHiddenServer` + `connect` for the generic protocol, an `http.createServer` app behind
 * the HTTP-specific protocol reached by curl and fetch.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { Socket } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connect,
  createHiddenServer,
  type HiddenServer,
  isRendezvousError,
  rendezvousUrl,
} from '../../index.js';
import type { LocalStack } from '../../local/stack.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { readAll, sha256 } from '../support/net.js';
import { provision, startStack } from '../support/stack.js';

let stack: LocalStack;
const servers: HiddenServer[] = [];

beforeAll(async () => {
  stack = await startStack({
    relay: { pairWaitMs: 1_500 },
  });
});
afterAll(async () => {
  for (const s of servers) s.close();
  await stack?.close();
});

const httpRelay = () => `http://127.0.0.1:${stack.httpPort}`;

function listen(server: HiddenServer): Promise<void> {
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(() => resolve());
  });
}

describe('createHiddenServer + connect (generic protocol)', () => {
  it('an echo hidden server answers connect() with sha256-equal bytes, both ways', async () => {
    const id = await provision(stack, { uuid: 'lib-echo' });
    // Three lines, as the issue promises: create, echo each connection, listen.
    const server = createHiddenServer(
      { api: stack.apiUrl, uuid: 'lib-echo', secret: id.secret, pool: 2 },
      (socket) => socket.pipe(socket),
    );
    await listen(server);
    const socket = await connect({ api: stack.apiUrl, uuid: 'lib-echo' });
    const payload = randomBytes(1 << 20);
    const back = readAll(socket);
    socket.end(payload);
    expect(sha256(await back)).toBe(sha256(payload));
  });

  it('close() stops parking and lets a live connection finish, then emits close', async () => {
    const id = await provision(stack, { uuid: 'lib-close' });
    const server = createHiddenServer({ api: stack.apiUrl, uuid: 'lib-close', secret: id.secret }, (s) =>
      s.pipe(s),
    );
    await listen(server);
    const live = await connect({ api: stack.apiUrl, uuid: 'lib-close' });
    const received = readAll(live);
    live.write('before close, ');
    const closed = new Promise<void>((r) => server.once('close', () => r()));
    let closedEarly = false;
    void closed.then(() => {
      closedEarly = true;
    });
    server.close();
    expect(server.listening).toBe(false);
    await new Promise((r) => setTimeout(r, 300));
    expect(closedEarly).toBe(false);
    const cookie = (await (await fetch(`${stack.apiUrl}/?uuid=lib-close`)).json()) as {
      result: { cookie: string };
    };
    expect(stack.relay.lot.count('generic', mobileCookieFor(cookie.result.cookie.slice(1)))).toBe(0);
    live.end('after close');
    expect((await received).toString()).toBe('before close, after close');
    await closed;
    await expect(connect({ api: stack.apiUrl, uuid: 'lib-close' })).rejects.toSatisfy(
      (e) => isRendezvousError(e, 'RELAY_REFUSED') && /no hidden server parked/.test((e as Error).message),
    );
  });

  it('an AbortSignal aborts a pending connect() promptly with a typed ABORTED error', async () => {
    const id = await provision(stack, { uuid: 'lib-abort' });
    // Registered but never parked: the relay keeps the mobile client waiting.
    await fetch(
      `${stack.apiUrl}/?uuid=lib-abort&response=${(await import('../../core/totp.js')).currentCode(id)}`,
      {
        method: 'PUT',
      },
    );
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(), 100);
    await expect(
      connect({ api: stack.apiUrl, uuid: 'lib-abort', signal: controller.signal }),
    ).rejects.toSatisfy((e) => isRendezvousError(e, 'ABORTED'));
    expect(Date.now() - started).toBeLessThan(600);
  });

  it('a timeout ends a pending connect() with a typed TIMEOUT error', async () => {
    await expect(connect({ api: stack.apiUrl, uuid: 'lib-abort', timeoutMs: 200 })).rejects.toSatisfy((e) =>
      isRendezvousError(e, 'TIMEOUT'),
    );
  });

  it('a wrong secret surfaces as a typed AUTH_FAILED error, not a retry loop', async () => {
    await provision(stack, { uuid: 'lib-wrong' });
    // A 1 s step: the agent tries the next steps' codes (a restart's replay looks the same)
    // before it concludes the secret is wrong.
    const server = createHiddenServer({
      api: stack.apiUrl,
      uuid: 'lib-wrong',
      secret: 'otpauth://totp/lib-wrong?secret=JBSWY3DPEHPK3PXP&period=1',
    });
    servers.push(server);
    let reconnects = 0;
    server.on('reconnecting', () => reconnects++);
    const err = await new Promise<Error>((resolve) => {
      server.once('error', resolve);
      server.listen();
    });
    expect(isRendezvousError(err, 'AUTH_FAILED')).toBe(true);
    expect(reconnects).toBe(0);
    expect(server.listening).toBe(false);
  });
});

describe('an http.Server app behind the HTTP-specific protocol', () => {
  beforeAll(async () => {
    const id = await provision(stack, { uuid: 'lib-web' });
    const app = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ hello: 'from a hidden http.Server', url: req.url }));
    });
    const server = createHiddenServer(
      { protocol: 'http', relay: httpRelay(), uuid: 'lib-web', secret: id.secret, pool: 2 },
      (socket: Socket) => app.emit('connection', socket),
    );
    await listen(server);
  });

  it('answers fetch at rendezvousUrl()', async () => {
    const url = rendezvousUrl(httpRelay(), 'lib-web', '/status');
    expect(url).toBe(`${httpRelay()}/status?rendezvous=lib-web`);
    for (let i = 0; i < 3; i++) {
      const res = await fetch(url);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({
        hello: 'from a hidden http.Server',
        url: '/status?rendezvous=lib-web',
      });
    }
  });

  it('answers curl', async () => {
    const { stdout } = await promisify(execFile)('curl', [
      '-sS',
      '--max-time',
      '10',
      rendezvousUrl(httpRelay(), 'lib-web', '/c'),
    ]);
    expect(JSON.parse(stdout)).toEqual({ hello: 'from a hidden http.Server', url: '/c?rendezvous=lib-web' });
  });
});
