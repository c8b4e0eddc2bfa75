/**
 * Issue 26 item 4: the peer port is inside the relay's descriptor ceiling, has its own admission
 * limit and handshake timeout, and listens on the cluster address by default. A real relay
 * process under a low descriptor limit, strangers' idle connections on its peer port.
 */
import { connect, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { textLog } from '../../core/log.js';
import { startRelay } from '../../relay/server.js';
import { dial } from '../support/net.js';
import { type RelayProcess, spawnRelayProcess } from '../support/relay-process.js';
import { embeddedStore } from '../support/store.js';
import { waitFor } from '../support/wait.js';

let store: Awaited<ReturnType<typeof embeddedStore>>;
const started: RelayProcess[] = [];

beforeAll(async () => {
  store = await embeddedStore();
});
afterAll(async () => {
  for (const r of started) r.child.kill('SIGKILL');
  await store?.close();
});

async function relay(env: Record<string, string>, nofile?: number): Promise<RelayProcess> {
  const r = await spawnRelayProcess({ storeEndpoint: store.endpoint, table: store.store.table, env, nofile });
  started.push(r);
  return r;
}

/** The first line the relay answers `line` with on `port` (empty when it closed without one). */
function answer(port: number, line: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let text = '';
    const done = () => {
      s.destroy();
      resolve(text.split('\n')[0] ?? '');
    };
    s.setTimeout(10_000, done);
    s.on('connect', () => s.write(line));
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (text.includes('\n')) done();
    });
    s.on('error', done);
    s.on('close', done);
  });
}

/** Whether a TCP connection to host:port is accepted. */
function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('the peer port under strangers’ idle connections', () => {
  it('public clients are still answered, /healthz stays up, the idle connections are closed and the refusals logged', async () => {
    const r = await relay({}, 320);
    const peerPort = Number(r.listening.peer?.split(':').pop());
    // Strangers: connections that never say a word, more than the descriptor limit allows.
    const idle: Array<{ socket: Socket; said: string; ended: boolean }> = [];
    for (let k = 0; k < 300; k++) {
      const socket = await dial(peerPort).catch(() => undefined);
      if (!socket) break;
      const entry = { socket, said: '', ended: false };
      socket.on('data', (d: Buffer) => {
        entry.said += d.toString('latin1');
      });
      socket.on('error', () => {});
      // The relay's end of the connection (these strangers never end theirs).
      socket.on('end', () => {
        entry.ended = true;
      });
      socket.on('close', () => {
        entry.ended = true;
      });
      idle.push(entry);
    }
    try {
      // A public client is served (a wrong cookie gets its answer), or told the relay is full.
      expect(await answer(r.port, 'Rnope\n')).toMatch(/^-ERR (unknown cookie|relay at capacity, try again)$/);
      const health = await fetch(`http://127.0.0.1:${r.health}/healthz`, {
        signal: AbortSignal.timeout(10_000),
      });
      expect(health.status).toBe(200);
      // Every idle connection is ended with a reason on the wire: refused at once, or after the
      // peer handshake timeout.
      await waitFor(() => idle.every((e) => e.ended), 30_000, 'idle peer connections ended by the relay');
      for (const e of idle) expect(e.said).toMatch(/^-ERR /);
      expect(idle.some((e) => e.said === '-ERR handshake timeout\n')).toBe(true);
      // The log says why they were refused.
      const refusals = r
        .output()
        .split('\n')
        .filter((l) => l.includes('"protocol":"peer"') && l.includes('"reason":"too_many_handshakes"'));
      expect(refusals.length).toBeGreaterThanOrEqual(1);
      // And the relay still serves afterwards.
      expect(await answer(r.port, 'Rnope\n')).toBe('-ERR unknown cookie');
    } finally {
      for (const e of idle) e.socket.destroy();
    }
  }, 90_000);

  it('listens on the address peers dial, not on RELAY_BIND’s wildcard, unless RELAY_PEER_BIND says so', async () => {
    // 127.0.0.2 is this machine too (all of 127/8 is loopback), but not the address peers dial.
    const r = await relay({ RELAY_BIND: '0.0.0.0', RELAY_PEER_HOST: '127.0.0.1' });
    const peerPort = Number(r.listening.peer?.split(':').pop());
    expect(await reachable('127.0.0.2', r.port)).toBe(true);
    expect(await reachable('127.0.0.1', peerPort)).toBe(true);
    expect(await reachable('127.0.0.2', peerPort)).toBe(false);
    const open = await relay({
      RELAY_BIND: '0.0.0.0',
      RELAY_PEER_HOST: '127.0.0.1',
      RELAY_PEER_BIND: '0.0.0.0',
    });
    expect(await reachable('127.0.0.2', Number(open.listening.peer?.split(':').pop()))).toBe(true);
  }, 90_000);
});

describe('the start line', () => {
  /** The relay's "relay listening" line as a person reads it. */
  async function startLine(clusterSecret?: string): Promise<string> {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d: Buffer) => {
      text += d.toString();
    });
    const r = await startRelay({
      store: store.store,
      port: 0,
      peerPort: 0,
      clusterSecret,
      log: textLog('relay', out),
    });
    await r.close();
    return text.split('\n').find((l) => l.includes('relay listening')) ?? '';
  }

  it('names no peer address for a relay alone (issue 28 #9), and the dialled and bound ones in a cluster', async () => {
    const alone = await startLine();
    expect(alone).toMatch(/relay listening .*generic=127\.0\.0\.1:\d+/);
    expect(alone).not.toMatch(/peer/);
    const clustered = await startLine('start-line-secret');
    expect(clustered).toMatch(/ peer=127\.0\.0\.1:\d+ /);
    expect(clustered).toMatch(/ peerBind=127\.0\.0\.1:\d+/);
  });
});
