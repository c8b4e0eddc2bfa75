/**
 * The library's hidden side under abuse and at its ends: mobile clients that reset (RST) at
 * every moment of a rendezvous, a target that is down, restarts inside one TOTP step, relays
 * and APIs that answer the way the original servers do. An unhandled 'error' anywhere in the
 * library would crash this worker and fail the file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newTotpSecret, otpauthUri } from '../../core/totp.js';
import { connect, createHiddenServer, type HiddenServer, rendezvousUrl } from '../../index.js';
import type { LocalStack } from '../../local/stack.js';
import { floodGenericResets, floodHttpResets, startFreezableWebServer } from '../support/flood.js';
import { readAll, startEchoServer } from '../support/net.js';
import { expose, provision, startStack } from '../support/stack.js';

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

function listening(server: HiddenServer): Promise<void> {
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    if (server.listening) server.once('listening', () => resolve());
    else server.listen(() => resolve());
  });
}

async function echoRoundTrip(uuid: string, text: string): Promise<string> {
  const socket = await connect({ api: stack.apiUrl, uuid, timeoutMs: 10_000 });
  const back = readAll(socket);
  socket.end(text);
  return (await back).toString();
}

describe('resets from mobile clients (issue 12 item 2)', () => {
  it('exposeHiddenServer (generic) keeps serving through a flood of resets', async () => {
    const echo = await startEchoServer();
    try {
      const id = await provision(stack, { uuid: 'rst-expose' });
      const server = expose(stack, id, echo.port, { pool: 4, backoff: { minMs: 10, maxMs: 100 } });
      await listening(server);
      await floodGenericResets(stack.apiUrl, 'rst-expose', 300);
      expect(server.listening).toBe(true);
      expect(await echoRoundTrip('rst-expose', 'still here')).toBe('still here');
    } finally {
      await echo.close();
    }
  });

  it('createHiddenServer with a handler that adds no error listener keeps serving', async () => {
    const id = await provision(stack, { uuid: 'rst-lib' });
    const server = createHiddenServer(
      { api: stack.apiUrl, uuid: 'rst-lib', secret: id.secret, pool: 4, backoff: { minMs: 10, maxMs: 100 } },
      (socket) => socket.pipe(socket),
    );
    await listening(server);
    await floodGenericResets(stack.apiUrl, 'rst-lib', 120);
    expect(server.listening).toBe(true);
    expect(await echoRoundTrip('rst-lib', 'still here')).toBe('still here');
  });

  it('exposeHiddenServer (HTTP-specific) keeps serving through a flood of resets', async () => {
    const web = await startFreezableWebServer();
    try {
      const id = await provision(stack, { uuid: 'rst-http' });
      const server = expose(stack, id, web.port, {
        protocol: 'http',
        pool: 4,
        backoff: { minMs: 10, maxMs: 100 },
      });
      await listening(server);
      // Resets while the agent is still reaching its (frozen) target, then while it serves.
      await web.freeze();
      await floodHttpResets(stack.httpPort, 'rst-http', 150);
      web.thaw();
      await floodHttpResets(stack.httpPort, 'rst-http', 200);
      expect(server.listening).toBe(true);
      const res = await fetch(rendezvousUrl(`http://127.0.0.1:${stack.httpPort}`, 'rst-http', '/after'));
      expect(await res.text()).toBe('still serving /after?rendezvous=rst-http');
    } finally {
      web.close();
    }
  });
});

describe('a hidden server whose target is down tells the mobile side (issue 13)', () => {
  it('HTTP-specific: the mobile client gets a 502 with a JSON body', async () => {
    const id = await provision(stack, { uuid: 'down-http' });
    const server = expose(stack, id, 1, { protocol: 'http' });
    await listening(server);
    const res = await fetch(rendezvousUrl(`http://127.0.0.1:${stack.httpPort}`, 'down-http', '/x'));
    expect(res.status).toBe(502);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    const body = (await res.json()) as { error: { diagnostic: string } };
    expect(body.error.diagnostic).toMatch(/hidden server's target .*unreachable/);
  });

  it('generic: the connection ends (no hang) and the library says why', async () => {
    const id = await provision(stack, { uuid: 'down-generic' });
    const server = expose(stack, id, 1);
    await listening(server);
    const socket = await connect({ api: stack.apiUrl, uuid: 'down-generic' });
    const got = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (c) => {
        text += c.toString();
      });
      socket.on('error', () => resolve(`error:${text}`));
      socket.on('close', () => resolve(text));
    });
    // Nothing of the target's reaches the mobile side; the socket ends instead of hanging.
    expect(got).not.toContain('hello');
  });
});

describe('restarts inside one TOTP step (issue 13)', () => {
  it('five hidden servers of one identity, each started as the last closes, all register and serve', async () => {
    // A 5 s step (an identity parameter): six registrations in a row need three or four steps.
    const params = { secret: newTotpSecret(), digits: 6, step: 5, algorithm: 'SHA1' as const };
    await stack.store.createIdentity({
      uuid: 'restart-lib',
      createdAt: Math.floor(Date.now() / 1000),
      ...params,
    });
    const secret = otpauthUri(params, 'restart-lib');
    for (let i = 0; i < 6; i++) {
      const server = createHiddenServer({ api: stack.apiUrl, uuid: 'restart-lib', secret }, (s) => s.pipe(s));
      await listening(server);
      expect(await echoRoundTrip('restart-lib', `run ${i}`)).toBe(`run ${i}`);
      await new Promise<void>((r) => server.close(() => r()));
    }
  }, 60_000);
});
