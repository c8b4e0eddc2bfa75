/**
 * A look-up that names the holding relay directly carries the front as `fallback`. When the
 * named relay died between the look-up and the connect (its port refuses), the library's
 * `connect` reaches the hidden server through the fallback instead of
 * failing (the CLI's `connect` is this function). The answer here comes from a stand-in API that names a refusing port, as a look-up
 * made a moment before the relay's death would.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../client/mobile.js';
import type { LocalStack } from '../../local/stack.js';
import { closedPort, readAll, startEchoServer } from '../support/net.js';
import { expose, provision, startStack } from '../support/stack.js';

let stack: LocalStack;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
let api: Server;
let apiUrl: string;
let dead: number;
const UUID = 'direct-fallback-test';

beforeAll(async () => {
  stack = await startStack();
  echo = await startEchoServer();
  dead = await closedPort();
  // Answers look-ups as the real API does, but naming a dead relay, with the live one as fallback.
  api = createServer((req, res) => {
    void fetch(`${stack.apiUrl}${req.url}`).then(async (real) => {
      const body = (await real.json()) as { result?: { host: string; port: number } };
      if (body.result) {
        const { host, port } = body.result;
        body.result = { ...body.result, host: '127.0.0.1', port: dead, fallback: { host, port } } as never;
      }
      res.writeHead(real.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  });
  await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
  apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  const id = await provision(stack, { uuid: UUID });
  expose(stack, id, echo.port);
  const until = Date.now() + 30_000;
  while (!(await stack.store.getRegistration(UUID))) {
    if (Date.now() > until) throw new Error('the agent did not register');
    await new Promise((r) => setTimeout(r, 50));
  }
}, 60_000);

afterAll(async () => {
  api?.close();
  await echo?.close();
  await stack?.close();
});

describe('a directly named relay that is gone', () => {
  it('connect() reaches the hidden server through the fallback', async () => {
    const socket = await connect({ api: apiUrl, uuid: UUID, timeoutMs: 30_000 });
    const back = readAll(socket);
    socket.end('via the fallback');
    expect((await back).toString()).toBe('via the fallback');
  }, 60_000);
});
