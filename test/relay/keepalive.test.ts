/**
 * TCP keepalive (what keeps an idle connection alive through the NLB's 350 s flow timeout) on
 * every socket that can sit idle: a parked hidden server at once, a spliced mobile client within a
 * sweep. On Linux the relay sets it once on its listeners, whose accepted sockets inherit it
 * (issue 29: no setsockopt per connection; issue 19 had set it per parked socket). Read from the
 * kernel's own table (/proc/net/tcp: timer 2 is the keepalive timer of an idle connection).
 */
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import type { Relay } from '../../relay/server.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const KEEPALIVE_MS = 2_000;
let c: Awaited<ReturnType<typeof startCluster>>;

beforeAll(async () => {
  c = await startCluster(1, { relay: { keepAliveMs: KEEPALIVE_MS } });
});
afterAll(async () => {
  await c?.close();
});

const hexPort = (p: number) => p.toString(16).toUpperCase().padStart(4, '0');

/** The kernel's timer kind ("tr") of the relay's end of the connection from `client`, if found. */
function relaySideTimer(relayPort: number, client: Socket): number | undefined {
  const local = `0100007F:${hexPort(relayPort)}`;
  const remote = `0100007F:${hexPort(client.localPort as number)}`;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local && f[2] === remote) return Number.parseInt((f[5] ?? '').split(':')[0] ?? '', 16);
  }
  return undefined;
}

async function cookie(): Promise<string> {
  const id = await provisionIdentity(c.store, { uuid: `keepalive-${Date.now()}` });
  const res = await fetch(`${c.apiUrl}/?uuid=${id.uuid}&response=${currentCode(id)}`, { method: 'PUT' });
  return ((await res.json()) as { result: { cookie: string } }).result.cookie.slice(1);
}

describe('TCP keepalive', () => {
  it('is on for a parked hidden server at once, and for a spliced mobile client within a sweep', async () => {
    const relay = c.relays[0] as Relay;
    const port = relay.address.port;
    const r = await cookie();
    const hidden = await dial(port);
    hidden.write(`R${r}\n`);
    await waitFor(() => relay.lot.count('generic', mobileCookieFor(r)) === 1, 3_000, 'parked');
    await waitFor(() => relaySideTimer(port, hidden) === 2, 3_000, 'keepalive on the parked socket');

    const mobile = await dial(port);
    mobile.write(`I${mobileCookieFor(r)}\n`);
    await new Promise((res) => mobile.once('data', res));
    // The mobile side's keepalive comes with the next sweep (every KEEPALIVE_MS / 2 here).
    await waitFor(
      () => relaySideTimer(port, mobile) === 2,
      KEEPALIVE_MS * 3,
      'keepalive on the spliced socket',
    );
    hidden.destroy();
    mobile.destroy();
  });

  it('comes from the listener on Linux: on for a connection still in its handshake, with no call of its own', async () => {
    // The kernel passes a listener's keepalive (and no-delay) on to each socket it accepts, so the
    // relay sets them once on the listener (relay/socket-options.ts) instead of per connection.
    const port = (c.relays[0] as Relay).address.port;
    const s = await dial(port);
    await waitFor(() => relaySideTimer(port, s) === 2, 3_000, 'keepalive inherited from the listener');
    s.destroy();
  });
});
