/**
 * The ends of a throttled rendezvous: a hidden server that answers and closes right after an
 * upload that spent its identity's bandwidth tokens must have its answer reach the mobile client
 * whole, then a clean end — not a reset while the answer still waits in the throttle for tokens
 * (a newcomer's `cat file | rendezvous connect` to a sink that answers "<n> <sha>" saw a reset).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connect, createHiddenServer, type HiddenServer } from '../../index.js';
import type { LocalStack } from '../../local/stack.js';
import { readAll } from '../support/net.js';
import { provision, startStack } from '../support/stack.js';

let stack: LocalStack;
let server: HiddenServer | undefined;
let sink: Server;

beforeAll(async () => {
  stack = await startStack({ relay: { pairWaitMs: 1_500, revalidateMs: 300 } });
  // Reads everything, then answers with its length and sha256 and closes (as `nc -q0` would).
  sink = createServer((s: Socket) => {
    const hash = createHash('sha256');
    let n = 0;
    s.on('data', (c: Buffer) => {
      n += c.length;
      hash.update(c);
    });
    s.on('end', () => s.end(`${n} ${hash.digest('hex')}\n`));
    s.on('error', () => {});
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', () => r()));
});
afterAll(async () => {
  server?.close();
  sink?.close();
  await stack?.close();
});

it('an answer sent as the hidden side closes reaches the client whole through a bandwidth cap', async () => {
  const uuid = 'bw-ends';
  const id = await provision(stack, { uuid });
  await stack.store.setLimits(uuid, { bytesPerSecond: 512 * 1024 });
  const port = (sink.address() as { port: number }).port;
  const { connect: dialTarget } = await import('node:net');
  server = createHiddenServer({ api: stack.apiUrl, uuid, secret: id.secret, pool: 2 }, (socket) => {
    const target = dialTarget(port, '127.0.0.1');
    target.on('error', () => socket.destroy());
    socket.on('error', () => target.destroy());
    socket.pipe(target).pipe(socket);
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => (server as HiddenServer).listen(() => resolve()));

  for (const size of [700 * 1024, 1536 * 1024]) {
    const socket = await connect({ api: stack.apiUrl, uuid });
    const payload = randomBytes(size);
    const answer = readAll(socket);
    socket.end(payload);
    const expected = `${size} ${createHash('sha256').update(payload).digest('hex')}\n`;
    expect((await answer).toString()).toBe(expected);
  }
}, 60_000);
