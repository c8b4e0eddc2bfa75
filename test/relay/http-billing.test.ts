/**
 * What the HTTP-specific port bills to an identity is what its hidden server received: a client
 * that goes on sending after its one request (bytes the relay drops) is not billed for them, so a
 * stranger who knows only a uuid cannot spend the identity's quota or bandwidth share with bytes
 * the hidden server never sees. The answer still reaches the client whole.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { type Relay, startRelay } from '../../relay/server.js';
import { provisionIdentity } from '../../server/identities.js';
import { dial } from '../support/net.js';
import { embeddedStore } from '../support/store.js';
import { waitFor } from '../support/wait.js';

let store: Awaited<ReturnType<typeof embeddedStore>>;
let relay: Relay;
beforeAll(async () => {
  store = await embeddedStore();
  relay = await startRelay({
    store: store.store,
    port: 0,
    httpPort: 0,
    healthPort: 0,
    metering: { flushMs: 200 },
  });
});
afterAll(async () => {
  await relay?.close();
  await store?.close();
});

function collect(s: Socket): () => Buffer {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.on('error', () => {});
  return () => Buffer.concat(chunks);
}

it('bytes a client sends after its one request are dropped and not billed', async () => {
  const id = await provisionIdentity(store.store, { uuid: 'gate-billing' });
  const port = relay.httpAddress?.port as number;
  const hidden = await dial(port);
  const seen = collect(hidden);
  hidden.write(`CONNECT uuid:${id.uuid}?response=${currentCode(id)} HTTP/1.1\r\nHost: relay\r\n\r\n`);
  await waitFor(() => seen().includes('\r\n\r\n'), 20_000, 'the CONNECT answered');
  const parkedHead = seen().indexOf('\r\n\r\n') + 4;
  await waitFor(() => relay.lot.count('http', id.uuid) === 1, 20_000, 'parked');

  const mobile = await dial(port);
  const answer = collect(mobile);
  const closed = new Promise((r) => mobile.once('close', r));
  mobile.write(`GET /?rendezvous=${id.uuid} HTTP/1.1\r\nHost: x\r\n\r\n`);
  // A stranger's 8 MiB after its request, while the hidden server takes its time to answer.
  for (let i = 0; i < 8; i++) mobile.write(Buffer.alloc(1 << 20, 0x41));
  await waitFor(() => seen().subarray(parkedHead).includes('\r\n\r\n'), 20_000, 'the request forwarded');
  await new Promise((r) => setTimeout(r, 1_500));
  hidden.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello');
  await waitFor(() => answer().toString().endsWith('hello'), 20_000, 'the answer whole');
  mobile.destroy();
  await closed;
  expect(answer().toString()).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nhello$/);

  const delivered = seen().length - parkedHead;
  await waitFor(
    async () => (await store.store.usageOf(id.uuid)).today.http.rendezvous === 1,
    20_000,
    'usage flushed',
  );
  await waitFor(() => (relay.meter?.unflushedBytes(id.uuid) ?? 1) === 0, 20_000, 'all flushed');
  const usage = (await store.store.usageOf(id.uuid)).today.http;
  expect(usage.bytesToHidden).toBe(delivered);
  expect(usage.bytesToHidden).toBeLessThan(1 << 20);
}, 120_000);
