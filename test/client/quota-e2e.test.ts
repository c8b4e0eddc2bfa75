/**
 * Issue 30 end to end, as an operator and an application see it: a real agent (the library's
 * HiddenServer) behind the real relay, real traffic spending a monthly quota, the relay's meter
 * counting it, the relay ending the agent's parks and refusing the next `connect()` with the typed
 * QUOTA_EXCEEDED, the agent waiting (one `'quota'` event, no re-dial loop), and, once the operator
 * raises the quota, the agent parking again and `connect()` reaching it.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connect, createHiddenServer, type HiddenServer, isRendezvousError } from '../../index.js';
import type { LocalStack } from '../../local/stack.js';
import { readAll, sha256 } from '../support/net.js';
import { provision, startStack } from '../support/stack.js';
import { waitFor } from '../support/wait.js';

let stack: LocalStack;
let server: HiddenServer | undefined;

beforeAll(async () => {
  // Short rounds and flushes: the quota is seen spent within a round of the traffic that spent it.
  stack = await startStack({ relay: { pairWaitMs: 1_500, revalidateMs: 300, metering: { flushMs: 300 } } });
});
afterAll(async () => {
  server?.close();
  await stack?.close();
});

it('a spent quota stops connect() and the agent without a re-dial loop; raised, both work again', async () => {
  const uuid = 'quota-e2e';
  const id = await provision(stack, { uuid });
  await stack.store.setLimits(uuid, { monthlyBytes: 1 << 20 });
  const quotaEvents: number[] = [];
  const quotaAt: number[] = [];
  server = createHiddenServer(
    { api: stack.apiUrl, uuid, secret: id.secret, pool: 2, quotaRecheckMs: 3_000 },
    (socket) => socket.pipe(socket),
  );
  server.on('quota', (_err: unknown, waitMs: number) => {
    quotaEvents.push(waitMs);
    quotaAt.push(Date.now());
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => (server as HiddenServer).listen(() => resolve()));

  // Under the quota: an echo of 768 KiB (1.5 MiB both ways) goes through whole.
  const socket = await connect({ api: stack.apiUrl, uuid });
  const payload = randomBytes(768 << 10);
  const back = readAll(socket);
  socket.end(payload);
  expect(sha256(await back)).toBe(sha256(payload));

  // The meter's flush lands it in the store; the month is now over its quota.
  await waitFor(
    async () => (await stack.store.monthBytes(uuid)) >= 2 * payload.length,
    20_000,
    'usage flushed',
  );
  expect(await stack.store.monthBytes(uuid)).toBe(2 * payload.length);

  // The relay ends the agent's parks at its next round; the agent says so once and waits.
  await waitFor(() => quotaEvents.length > 0, 20_000, 'the agent told quota exceeded');
  const refused = await connect({ api: stack.apiUrl, uuid }).then(
    (s) => {
      s.destroy();
      return undefined;
    },
    (err: unknown) => err,
  );
  expect(isRendezvousError(refused, 'QUOTA_EXCEEDED')).toBe(true);
  expect((refused as { retryAfter?: number }).retryAfter).toBeGreaterThan(0);
  // One wait announced for the whole pool at a time, not one per slot or per dial: at most one
  // more per recheck period since the first.
  expect(quotaEvents.length).toBeLessThanOrEqual(1 + Math.floor((Date.now() - (quotaAt[0] ?? 0)) / 3_000));
  expect(quotaEvents[0]).toBeGreaterThanOrEqual(3_000);

  // The operator raises the quota: after its wait, the agent parks again and connect() reaches it.
  await stack.store.setLimits(uuid, { monthlyBytes: 100 << 20 });
  await waitFor(
    async () => {
      try {
        const s = await connect({ api: stack.apiUrl, uuid });
        const echoed = readAll(s);
        s.end(Buffer.from('again'));
        return (await echoed).toString() === 'again';
      } catch {
        return false;
      }
    },
    30_000,
    'connect() works again',
  );
  // Never a loop: at most one quota event per recheck period.
  expect(quotaEvents.length).toBeLessThanOrEqual(1 + Math.floor((Date.now() - (quotaAt[0] ?? 0)) / 3_000));
}, 90_000);
