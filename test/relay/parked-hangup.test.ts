/**
 * Issue 29 (memory): a parked socket has one `close` handler (the relay's descriptor count) and
 * the lot adds none of its own; a pool of parked hidden servers that later hang up — FIN, RST,
 * or both in one pool — still leaves the relay's parked count, and the relay serves the next.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial } from '../support/net.js';
import { waitFor } from '../support/wait.js';

type Cluster = Awaited<ReturnType<typeof startCluster>>;

async function parkedCount(c: Cluster): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${c.relays[0]?.healthAddress?.port}/healthz`);
  return ((await res.json()) as { parked: number }).parked;
}

async function hiddenCookie(c: Cluster, uuid: string): Promise<string> {
  const id = await provisionIdentity(c.store, { uuid });
  const put = await fetch(`${c.apiUrl}/?uuid=${uuid}&response=${currentCode(id)}`, { method: 'PUT' });
  return ((await put.json()) as { result: { cookie: string } }).result.cookie;
}

describe('parked hidden servers that hang up later', () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster(1, { relay: { healthPort: 0 } });
  });
  afterAll(async () => {
    await c?.close();
  });

  it('a pool of 10 that ends with FIN and RST leaves the parked count at 0, and a new pool parks', async () => {
    const r = await hiddenCookie(c, 'hangup-pool');
    const port = c.relays[0]?.address.port as number;
    const pool: Socket[] = [];
    for (let i = 0; i < 10; i++) {
      const s = await dial(port);
      s.on('error', () => {});
      s.write(`${r}\n`);
      pool.push(s);
    }
    await waitFor(async () => (await parkedCount(c)) === 10, 10_000, 'ten parked');
    for (const [i, s] of pool.entries()) {
      if (i % 2) s.end();
      else s.resetAndDestroy();
    }
    await waitFor(async () => (await parkedCount(c)) === 0, 10_000, 'the pool gone from the count');
    const again = await dial(port);
    again.write(`${r}\n`);
    await waitFor(async () => (await parkedCount(c)) === 1, 10_000, 'the next one parked');
    expect(again.destroyed).toBe(false);
    again.destroy();
    await waitFor(async () => (await parkedCount(c)) === 0, 10_000, 'the last one gone');
  });
});
