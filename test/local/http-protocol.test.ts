/**
 * The HTTP-specific protocol's edges on one relay, with raw sockets: CONNECT authentication by
 * code, by cookie and by a repeated code (clients of the original), and every refusal.
 */

import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeForStep, currentCode, timeStep } from '../../core/totp.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial, rawExchange } from '../support/net.js';

let cluster: Awaited<ReturnType<typeof startCluster>>;
let strict: Awaited<ReturnType<typeof startCluster>>;
let httpPort: number;

beforeAll(async () => {
  cluster = await startCluster(1, { relay: { pairWaitMs: 500 } });
  strict = await startCluster(1, { relay: { pairWaitMs: 500, connectPolicy: { codeReuse: 'never' } } });
  httpPort = cluster.relays[0]?.httpAddress?.port as number;
});
afterAll(async () => {
  await cluster?.close();
  await strict?.close();
});

/** Sends a CONNECT and returns the response head text, keeping the socket open (parked). */
async function connectPark(port: number, target: string) {
  const s = await dial(port);
  s.write(`CONNECT ${target} HTTP/1.1\r\nHost: relay\r\n\r\n`);
  const head = await new Promise<string>((resolve) => {
    let text = '';
    const onData = (c: Buffer) => {
      text += c.toString('latin1');
      if (text.includes('\r\n\r\n')) {
        s.off('data', onData);
        resolve(text);
      }
    };
    s.on('data', onData);
    s.on('end', () => resolve(text));
  });
  const cookie = /Rendezvous-Cookie: (\S+)/.exec(head)?.[1];
  return { socket: s, head, status: Number(head.slice(9, 12)), cookie };
}

async function waitParked(uuid: string, n: number, c = cluster) {
  const until = Date.now() + 3_000;
  while ((c.relays[0]?.lot.count('http', uuid) ?? 0) < n) {
    if (Date.now() > until) throw new Error('not parked');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('CONNECT authentication', () => {
  it('a code parks with 200 and a Rendezvous-Cookie; the cookie parks again without a code', async () => {
    const id = await provisionIdentity(cluster.store, { uuid: 'h-cookie' });
    const first = await connectPark(httpPort, `uuid:h-cookie?response=${currentCode(id)}`);
    expect(first.status).toBe(200);
    expect(first.head).toMatch(/^HTTP\/1\.1 200 OK\r\nRendezvous-Cookie: [A-Za-z0-9_-]{24}\r\n\r\n$/);
    const second = await connectPark(httpPort, `uuid:h-cookie?cookie=${first.cookie}`);
    expect(second.status).toBe(200);
    expect(second.cookie).toBe(first.cookie);
    await waitParked('h-cookie', 2);
    const wrong = await connectPark(httpPort, 'uuid:h-cookie?cookie=AAAAAAAAAAAAAAAAAAAAAAAA');
    expect(wrong.status).toBe(401);
    first.socket.destroy();
    second.socket.destroy();
  });

  it('a repeated code (clients of the original) is accepted while a park made with it lives', async () => {
    const id = await provisionIdentity(cluster.store, { uuid: 'h-repeat' });
    const code = currentCode(id);
    const first = await connectPark(httpPort, `uuid:h-repeat?response=${code}`);
    expect(first.status).toBe(200);
    await waitParked('h-repeat', 1);
    const again = await connectPark(httpPort, `uuid:h-repeat?response=${code}`);
    expect(again.status).toBe(200);
    await waitParked('h-repeat', 2);
    first.socket.destroy();
    again.socket.destroy();
    const until = Date.now() + 3_000;
    while ((cluster.relays[0]?.lot.count('http', 'h-repeat') ?? 0) > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const afterParksGone = await connectPark(httpPort, `uuid:h-repeat?response=${code}`);
    expect(afterParksGone.status).toBe(401);
  });

  it('with RELAY_CONNECT_CODE_REUSE=never a code works once', async () => {
    const port = strict.relays[0]?.httpAddress?.port as number;
    const id = await provisionIdentity(strict.store, { uuid: 'h-strict' });
    const code = currentCode(id);
    const first = await connectPark(port, `uuid:h-strict?response=${code}`);
    expect(first.status).toBe(200);
    await waitParked('h-strict', 1, strict);
    expect((await connectPark(port, `uuid:h-strict?response=${code}`)).status).toBe(401);
    first.socket.destroy();
  });

  it("a code used by a PUT is refused by CONNECT, and a CONNECT's code by a PUT", async () => {
    const id = await provisionIdentity(cluster.store, { uuid: 'h-cross' });
    const step = timeStep(id, Date.now());
    const put = await fetch(`${cluster.apiUrl}/?uuid=h-cross&response=${codeForStep(id, step)}`, {
      method: 'PUT',
    });
    expect(put.status).toBe(200);
    expect((await connectPark(httpPort, `uuid:h-cross?response=${codeForStep(id, step)}`)).status).toBe(401);
    const c = await connectPark(httpPort, `uuid:h-cross?response=${codeForStep(id, step + 1)}`);
    expect(c.status).toBe(200);
    const put2 = await fetch(`${cluster.apiUrl}/?uuid=h-cross&response=${codeForStep(id, step + 1)}`, {
      method: 'PUT',
    });
    expect(put2.status).toBe(401);
    c.socket.destroy();
  });
});

describe('HTTP-specific refusals: each answered, the connection closed, the relay unaffected', () => {
  const cases: Array<[string, string | Buffer, RegExp]> = [
    [
      'CONNECT to an address instead of uuid: → 403',
      'CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n',
      /^HTTP\/1\.1 403 /,
    ],
    ['CONNECT without response → 407', 'CONNECT uuid:someone HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 407 /],
    ['a wrong code → 401', 'CONNECT uuid:someone?response=123456 HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 401 /],
    ['a malformed request line → 400', 'HELLO\r\n\r\n', /^HTTP\/1\.1 400 /],
    [
      'Content-Length with Transfer-Encoding → 400',
      'POST /?rendezvous=x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n',
      /^HTTP\/1\.1 400 .*Content-Length with Transfer-Encoding/s,
    ],
    [
      'a head over 16 KiB → 431',
      `GET / HTTP/1.1\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`,
      /^HTTP\/1\.1 431 /,
    ],
  ];
  it.each(cases)('%s', async (_name, bytes, expected) => {
    const r = await rawExchange(httpPort, bytes);
    expect(r.closed).toBe(true);
    expect(r.text).toMatch(expected);
    expect(r.text).toContain('"error":{');
  });

  it('CONNECT to a live address gets 403 and nothing is dialled', async () => {
    let dialled = 0;
    const target = createServer(() => {
      dialled++;
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    const port = (target.address() as AddressInfo).port;
    try {
      for (const t of [
        `127.0.0.1:${port}`,
        `localhost:${port}`,
        `http://127.0.0.1:${port}/`,
        `[::1]:${port}`,
      ]) {
        const r = await rawExchange(httpPort, `CONNECT ${t} HTTP/1.1\r\nHost: ${t}\r\n\r\n`);
        expect(r.text).toMatch(/^HTTP\/1\.1 403 /);
      }
      await new Promise((r) => setTimeout(r, 100));
      expect(dialled).toBe(0);
    } finally {
      target.close();
    }
  });

  it('after all the refusals the relay still parks and pairs', async () => {
    const id = await provisionIdentity(cluster.store, { uuid: 'h-after' });
    const parked = await connectPark(httpPort, `uuid:h-after?response=${currentCode(id)}`);
    expect(parked.status).toBe(200);
    await waitParked('h-after', 1);
    const mobile = rawExchange(httpPort, 'GET /x?rendezvous=h-after HTTP/1.1\r\nHost: r\r\n\r\n');
    const request = await new Promise<string>((resolve) =>
      parked.socket.once('data', (c: Buffer) => resolve(c.toString())),
    );
    // One request per connection: the hidden server is told to close after answering it; the
    // head carries the rendezvous's correlation id (issue 17).
    expect(request).toMatch(
      /^GET \/x\?rendezvous=h-after HTTP\/1\.1\r\nHost: r\r\nRendezvous-Id: [A-Za-z0-9_-]{16}\r\nConnection: close\r\n\r\n$/,
    );
    parked.socket.end('HTTP/1.1 204 No Content\r\n\r\n');
    // The answer tells the mobile client the connection ends with it.
    expect((await mobile).text).toBe('HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n');
  });

  it('data sent before the 200 → 409', async () => {
    const id = await provisionIdentity(cluster.store, { uuid: 'h-eager' });
    const r = await rawExchange(
      httpPort,
      `CONNECT uuid:h-eager?response=${currentCode(id)} HTTP/1.1\r\n\r\nhello`,
    );
    expect(r.text).toMatch(/^HTTP\/1\.1 409 /);
    expect(r.closed).toBe(true);
  });

  it('a silent connection gets 408 at the handshake deadline', async () => {
    const c = await startCluster(1, { relay: { handshakeTimeoutMs: 300 } });
    try {
      const r = await rawExchange(c.relays[0]?.httpAddress?.port as number, null, 3_000);
      expect(r.text).toMatch(/^HTTP\/1\.1 408 /);
      expect(r.closed).toBe(true);
    } finally {
      await c.close();
    }
  });
});
