/**
 * Issue 12 item 5: every splice ends with both sockets closed and the counters at zero. First the
 * copy loop alone (an abort arriving while the other side's FIN is being sent used to call
 * `resetAndDestroy()` during a pending shutdown: EINVAL, no 'close', a leaked descriptor), then a
 * mixed run through a relay with descriptor and counter accounting.
 */
import { readdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { splice } from '../../core/splice.js';
import { currentCode } from '../../core/totp.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const fds = () => readdirSync('/proc/self/fd').length;

/** A connected pair of sockets on 127.0.0.1: [accepted side, dialling side]. */
async function pair(): Promise<[Socket, Socket]> {
  const server = createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const near = await dial((server.address() as AddressInfo).port);
  const far = await accepted;
  server.close();
  return [far, near];
}

describe('splice', () => {
  it('an abort while the other side is being ended still closes both and calls onDone', async () => {
    const [a, aRemote] = await pair();
    const [b, bRemote] = await pair();
    for (const s of [a, b, aRemote, bRemote]) s.on('error', () => {});
    let done = 0;
    splice(a, b, () => done++);
    // A's FIN makes the loop end B; in the same turn A fails, as when a RST follows the FIN.
    a.once('end', () => a.destroy(new Error('ECONNRESET (simulated)')));
    aRemote.end();
    await waitFor(() => done === 1, 3_000, 'onDone');
    expect(a.destroyed && b.destroyed).toBe(true);
    await waitFor(() => b.closed, 3_000, 'B closed');
    aRemote.destroy();
    bRemote.destroy();
  });
});

describe('a mixed run through the relay', () => {
  let c: Awaited<ReturnType<typeof startCluster>>;
  beforeAll(async () => {
    c = await startCluster(1, { relay: { healthPort: 0, pairWaitMs: 2_000 } });
  });
  afterAll(async () => {
    await c?.close();
  });

  it('resets, half-closes and normal ends: descriptors and counters return to their baseline', async () => {
    const id = await provisionIdentity(c.store, { uuid: 'leak-mixed' });
    const put = await fetch(`${c.apiUrl}/?uuid=leak-mixed&response=${currentCode(id)}`, { method: 'PUT' });
    const r = ((await put.json()) as { result: { cookie: string } }).result.cookie;
    const i = ((await (await fetch(`${c.apiUrl}/?uuid=leak-mixed`)).json()) as { result: { cookie: string } })
      .result.cookie;
    const port = c.relays[0]?.address.port as number;
    await new Promise((res) => setTimeout(res, 200));
    const baseline = fds();

    const round = async (k: number) => {
      const hidden = await dial(port);
      hidden.on('error', () => {});
      hidden.write(`${r}\n`);
      await waitFor(() => (c.relays[0]?.lot.count('generic', i.slice(1)) ?? 0) > 0, 3_000, 'parked');
      const mobile = await dial(port);
      mobile.on('error', () => {});
      const hiddenGot = new Promise<void>((res) => hidden.once('data', () => res()));
      mobile.write(`${i}\nhello ${k}`);
      await hiddenGot;
      const closed = (s: Socket) =>
        new Promise<void>((res) => (s.closed ? res() : s.once('close', () => res())));
      switch (k % 5) {
        case 0: // normal end, both ways
          hidden.end('bye');
          mobile.end();
          break;
        case 1: // the mobile client resets
          mobile.resetAndDestroy();
          break;
        case 2: // the hidden server resets
          hidden.resetAndDestroy();
          break;
        case 3: // the mobile half-closes, the hidden server answers and ends, then resets its side
          mobile.end();
          await new Promise((res) => setTimeout(res, 20));
          hidden.write('late answer', () => hidden.resetAndDestroy());
          break;
        case 4: // the hidden server half-closes and the mobile client resets right away
          hidden.end('part');
          mobile.once('end', () => mobile.resetAndDestroy());
          mobile.resume();
          break;
      }
      hidden.resume();
      mobile.resume();
      await Promise.race([
        Promise.all([closed(hidden), closed(mobile)]),
        new Promise((res) => setTimeout(res, 3_000)),
      ]);
      hidden.destroy();
      mobile.destroy();
    };
    for (let k = 0; k < 40; k++) await round(k);
    await waitFor(() => (c.relays[0]?.splices ?? -1) === 0, 5_000, 'splices back to zero');
    await waitFor(() => c.relays[0]?.lot.size === 0, 5_000, 'nothing parked');
    const h = (await (
      await fetch(`http://127.0.0.1:${c.relays[0]?.healthAddress?.port}/healthz`)
    ).json()) as {
      parked: number;
      splices: number;
    };
    expect(h).toMatchObject({ parked: 0, splices: 0 });
    // Every relay-side socket closed: the process's descriptors are back to the baseline (a few
    // of the store client's pooled connections may come and go).
    await waitFor(() => fds() <= baseline + 3, 5_000, `descriptors back to ${baseline}`);
  }, 60_000);
});
