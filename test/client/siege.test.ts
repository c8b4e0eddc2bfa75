/**
 * Issue 26 #10, as a user sees it: strangers who know only a uuid spend its whole guess budget
 * from a hundred addresses, and the hidden server's agent, started on an address that never
 * registered that uuid (a laptop that moved), still registers and parks at once: it proves itself
 * with a one-time proof that no budget guards. A short code from that address is locked out.
 */
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connect, createHiddenServer, type HiddenServer } from '../../index.js';
import type { LocalStack } from '../../local/stack.js';
import { readAll, sha256 } from '../support/net.js';
import { provision, startStack } from '../support/stack.js';

let stack: LocalStack;
let server: HiddenServer | undefined;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  server?.close();
  await stack?.close();
});

/** A PUT from `from` (a loopback address of its own): the status the API answers. */
function put(query: string, from: string): Promise<number> {
  const url = new URL(`${stack.apiUrl}/?${query}`);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: `${url.pathname}${url.search}`,
        method: 'PUT',
        localAddress: from,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

it('after 100 strangers` wrong codes for a uuid, its agent on a new address registers and serves at once', async () => {
  const id = await provision(stack, { uuid: 'siege-agent' });
  const statuses: number[] = [];
  for (let batch = 0; batch < 10; batch++)
    statuses.push(
      ...(await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          put(
            `uuid=${id.uuid}&response=${String((Number(id.code()) + 1 + i) % 1e6).padStart(6, '0')}`,
            `127.0.${20 + batch}.${10 + i}`,
          ),
        ),
      )),
    );
  // The uuid's budget is spent: most strangers were told to wait.
  expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(80);
  // A person typing the right short code from the agent's (new) address is locked out too.
  expect(await put(`uuid=${id.uuid}&response=${id.code()}`, '127.0.99.1')).toBe(429);

  server = createHiddenServer({ api: stack.apiUrl, uuid: id.uuid, secret: id.secret }, (s) => s.pipe(s));
  await new Promise<void>((resolve, reject) => {
    server?.once('error', reject);
    server?.listen(() => resolve());
  });
  const socket = await connect({ api: stack.apiUrl, uuid: id.uuid });
  const payload = randomBytes(64 * 1024);
  const back = readAll(socket);
  socket.end(payload);
  expect(sha256(await back)).toBe(sha256(payload));
}, 60_000);
