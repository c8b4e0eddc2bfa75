/**
 * Issue 12 item 12: a captured peer line cannot be replayed. Each peer request carries a nonce
 * the holder remembers for the line's validity window. Issue 26 item 6: nor can it be replayed at
 * another relay, whose nonce memory is its own: lines and hellos name the relay they are for.
 */

import { createServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { dialPeer } from '../../relay/peer-dial.js';
import { encodePeerHello, encodePeerLine, PEER_TIMEOUT_MS } from '../../relay/peer-line.js';
import { PeerPool } from '../../relay/peer-pool.js';
import { type Relay, startRelay } from '../../relay/server.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const SECRET = 'peer-replay-secret';
let c: Awaited<ReturnType<typeof startCluster>>;

beforeAll(async () => {
  c = await startCluster(3, { secret: SECRET });
});
afterAll(async () => {
  await c?.close();
});

/**
 * Sends `line` to the peer port of `relay` (default: the first) and returns the first line of the
 * answer, or "(no answer)" after 5 s (a valid hello gets none).
 */
async function ask(line: Buffer, relay: Relay = c.relays[0] as Relay): Promise<string> {
  const s = await dial(relay.peerAddress?.port as number);
  s.write(line);
  return new Promise((resolve) => {
    let text = '';
    const t = setTimeout(() => {
      s.destroy();
      resolve('(no answer)');
    }, 5_000);
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (text.includes('\n')) {
        clearTimeout(t);
        s.destroy();
        resolve(text.slice(0, text.indexOf('\n') + 1));
      }
    });
    s.on('close', () => {
      clearTimeout(t);
      resolve(text);
    });
  });
}

/** Parks `n` HTTP hidden servers for `uuid` on `relay`; resolves to their sockets. */
async function parkHttp(relay: Relay, uuid: string, code: string, n: number) {
  const parks = [];
  let cookie = '';
  for (let k = 0; k < n; k++) {
    const s = await dial(relay.httpAddress?.port as number);
    s.write(`CONNECT uuid:${uuid}?${cookie ? `cookie=${cookie}` : `response=${code}`} HTTP/1.1\r\n\r\n`);
    const head = await new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));
    cookie ||= /Rendezvous-Cookie: (\S+)/.exec(head)?.[1] ?? '';
    parks.push(s);
  }
  await waitFor(() => relay.lot.count('http', uuid) === n, 3_000, 'parked');
  return parks;
}

describe('peer lines', () => {
  it('a captured line is honoured once; its replay is refused', async () => {
    const id = await provisionIdentity(c.store, { uuid: 'peer-replay' });
    const http = c.relays[0]?.httpAddress?.port as number;
    const code = currentCode(id);
    // Two parked HTTP hidden servers, so a replay would find a second one to take.
    const parks = [];
    let cookie = '';
    for (let k = 0; k < 2; k++) {
      const s = await dial(http);
      s.write(
        `CONNECT uuid:peer-replay?${cookie ? `cookie=${cookie}` : `response=${code}`} HTTP/1.1\r\n\r\n`,
      );
      const head = await new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));
      cookie ||= /Rendezvous-Cookie: (\S+)/.exec(head)?.[1] ?? '';
      parks.push(s);
    }
    await waitFor(() => (c.relays[0]?.lot.count('http', 'peer-replay') ?? 0) === 2, 3_000, 'parked');
    const captured = encodePeerLine(SECRET, { kind: 'http', key: 'peer-replay', waitMs: 0 });
    expect(await ask(captured)).toBe('+OK\n');
    expect(await ask(captured)).toMatch(/^-ERR /);
    expect(c.relays[0]?.lot.count('http', 'peer-replay')).toBe(1);
    // A fresh line (new nonce) is still served.
    expect(await ask(encodePeerLine(SECRET, { kind: 'http', key: 'peer-replay', waitMs: 0 }))).toBe('+OK\n');
    for (const s of parks) s.destroy();
  });
});

describe('peer lines name the relay they are for', () => {
  it('a line captured for relay B is refused at relay C, whose own lines still pass', async () => {
    const [, b, relayC] = c.relays as [Relay, Relay, Relay];
    const id = await provisionIdentity(c.store, { uuid: 'peer-bound' });
    const code = currentCode(id);
    // Hidden servers parked on both, so a replay at C would find one to take.
    const parks = [
      ...(await parkHttp(b, 'peer-bound', code, 2)),
      ...(await parkHttp(relayC, 'peer-bound', code, 2)),
    ];
    try {
      const forB = encodePeerLine(SECRET, { kind: 'http', key: 'peer-bound', waitMs: 0, to: b.relayId });
      expect(await ask(forB, b)).toBe('+OK\n');
      expect(await ask(forB, relayC)).toBe('-ERR peer line for another relay\n');
      expect(relayC.lot.count('http', 'peer-bound')).toBe(2);
      // Captured before B used it: still nothing at C.
      const unusedForB = encodePeerLine(SECRET, {
        kind: 'http',
        key: 'peer-bound',
        waitMs: 0,
        to: b.relayId,
      });
      expect(await ask(unusedForB, relayC)).toBe('-ERR peer line for another relay\n');
      expect(relayC.lot.count('http', 'peer-bound')).toBe(2);
      // A pooled link's hello is bound the same way.
      expect(await ask(encodePeerHello(SECRET, Date.now(), b.relayId), relayC)).toBe(
        '-ERR peer line for another relay\n',
      );
      expect(await ask(encodePeerHello(SECRET, Date.now(), relayC.relayId), relayC)).toBe('(no answer)');
      // C's own lines are served.
      const forC = encodePeerLine(SECRET, { kind: 'http', key: 'peer-bound', waitMs: 0, to: relayC.relayId });
      expect(await ask(forC, relayC)).toBe('+OK\n');
      expect(relayC.lot.count('http', 'peer-bound')).toBe(1);
    } finally {
      for (const s of parks) s.destroy();
    }
  });

  it('lines of the previous release (no destination) pass only during the grace after a relay starts', async () => {
    const strict = await startRelay({
      store: c.store,
      port: 0,
      httpPort: 0,
      peerPort: 0,
      clusterSecret: SECRET,
      peerUnboundGraceMs: 0,
    });
    try {
      const id = await provisionIdentity(c.store, { uuid: 'peer-unbound' });
      const code = currentCode(id);
      const parks = [
        ...(await parkHttp(strict, 'peer-unbound', code, 1)),
        ...(await parkHttp(c.relays[2] as Relay, 'peer-unbound', code, 1)),
      ];
      try {
        const unbound = () => encodePeerLine(SECRET, { kind: 'http', key: 'peer-unbound', waitMs: 0 });
        expect(await ask(unbound(), strict)).toBe('-ERR peer line names no relay\n');
        expect(await ask(encodePeerHello(SECRET), strict)).toBe('-ERR peer line names no relay\n');
        expect(strict.lot.count('http', 'peer-unbound')).toBe(1);
        // A relay in its grace (the default, RELAY_PEER_UNBOUND_GRACE_MS) still serves them.
        expect(await ask(unbound(), c.relays[2] as Relay)).toBe('+OK\n');
      } finally {
        for (const s of parks) s.destroy();
      }
    } finally {
      await strict.close();
    }
  });
});

describe('pooled links to a relay that takes bound lines only', () => {
  it('their hellos name that relay: they stay open past the first-line deadline and carry the next pairing', async () => {
    const strict = await startRelay({
      store: c.store,
      port: 0,
      httpPort: 0,
      peerPort: 0,
      clusterSecret: SECRET,
      peerUnboundGraceMs: 0,
    });
    const pool = new PeerPool(SECRET);
    try {
      const id = await provisionIdentity(c.store, { uuid: 'peer-pooled' });
      const parks = await parkHttp(strict, 'peer-pooled', currentCode(id), 2);
      const peer = `127.0.0.1:${strict.peerAddress?.port}`;
      const ask = {
        peer,
        secret: SECRET,
        kind: 'http' as const,
        key: 'peer-pooled',
        pool,
        to: strict.relayId,
      };
      const first = await dialPeer(ask);
      expect(first).toBeDefined();
      await waitFor(() => pool.idleTo(peer) === 1, 5_000, 'an idle link');
      // Past the holder's deadline for a first line: only a hello it accepted keeps the link.
      await new Promise((r) => setTimeout(r, PEER_TIMEOUT_MS + 1_000));
      expect(pool.idleTo(peer)).toBe(1);
      const second = await dialPeer(ask);
      expect(second).toBeDefined();
      expect(strict.lot.count('http', 'peer-pooled')).toBe(0);
      for (const s of [first, second, ...parks]) s?.destroy();
    } finally {
      pool.close();
      await strict.close();
    }
  });
});

describe('a rolling deploy', () => {
  it('a relay of this release still pairs through a holder of the previous one (which knows no destination)', async () => {
    // The previous release's holder: its line shape ends at `from=`; anything more is malformed.
    const lines: string[] = [];
    const old = createServer((s: Socket) => {
      s.once('data', (d: Buffer) => {
        const line = d.toString('latin1').trimEnd();
        lines.push(line);
        s.end(/ to=/.test(line) ? '-ERR malformed peer line\n' : '+OK\nhidden bytes');
      });
    });
    await new Promise<void>((r) => old.listen(0, '127.0.0.1', () => r()));
    try {
      const port = (old.address() as { port: number }).port;
      const link = await dialPeer({
        peer: `127.0.0.1:${port}`,
        secret: SECRET,
        kind: 'generic',
        key: 'abcdefghijklmnopqrstuvwx',
        tag: { rid: 'AAAAAAAAAAAAAAAA', from: 'asking-relay' },
        to: 'old-relay',
      });
      expect(link).toBeDefined();
      link?.destroy();
      // Bound first; then as the previous release signs it, tag kept.
      expect(lines.map((l) => / to=/.test(l))).toEqual([true, false]);
      expect(lines[1]).toMatch(/ rid=AAAAAAAAAAAAAAAA from=asking-relay$/);
    } finally {
      old.close();
    }
  });
});
