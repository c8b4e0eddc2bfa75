/**
 * Issue 19: a mobile client whose cookie was checked within the last second and whose hidden
 * server is parked on the same relay is paired synchronously, `+OK` and its early bytes written
 * to the hidden server in one go. Both that path and the general one (nothing parked yet: the
 * client waits for a park) deliver the same bytes in the same order.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import type { Relay } from '../../relay/server.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial } from '../support/net.js';
import { waitFor } from '../support/wait.js';

let c: Awaited<ReturnType<typeof startCluster>>;
beforeAll(async () => {
  c = await startCluster(1);
});
afterAll(async () => {
  await c?.close();
});

/** Collects what a socket reads until `want` bytes arrived. */
function read(s: Socket, want: number): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (text.length >= want) resolve(text);
    });
  });
}

describe('pairing paths', () => {
  it('a parked hidden server reads +OK then the early bytes; the mobile reads +OK then the answer', async () => {
    const relay = c.relays[0] as Relay;
    const port = relay.address.port;
    const id = await provisionIdentity(c.store, { uuid: `paths-${Date.now()}` });
    const res = await fetch(`${c.apiUrl}/?uuid=${id.uuid}&response=${currentCode(id)}`, { method: 'PUT' });
    const r = ((await res.json()) as { result: { cookie: string } }).result.cookie.slice(1);
    const i = mobileCookieFor(r);

    // Parked first: the park's check leaves the cookie cached, so these pair on the fast path.
    const hiddens = [await dial(port), await dial(port)];
    for (const h of hiddens) h.write(`R${r}\n`);
    await waitFor(() => relay.lot.count('generic', i) === 2, 3_000, 'parked');
    for (const [k, h] of hiddens.entries()) {
      const seen = read(h, `+OK\nearly ${k}`.length);
      const m = await dial(port);
      const answer = read(m, `+OK\nanswer ${k}`.length);
      m.write(`I${i}\nearly ${k}`);
      expect(await seen).toBe(`+OK\nearly ${k}`);
      h.write(`answer ${k}`);
      expect(await answer).toBe(`+OK\nanswer ${k}`);
      m.destroy();
      h.destroy();
    }

    // Nothing parked: the mobile client waits on the general path until a hidden server parks.
    const m = await dial(port);
    const answer = read(m, '+OK\nlate answer'.length);
    m.write(`I${i}\nlate early`);
    await new Promise((res) => setTimeout(res, 200));
    const h = await dial(port);
    const seen = read(h, '+OK\nlate early'.length);
    h.write(`R${r}\n`);
    expect(await seen).toBe('+OK\nlate early');
    h.write('late answer');
    expect(await answer).toBe('+OK\nlate answer');
    m.destroy();
    h.destroy();
  });
});
