/**
 * A raw-socket fake of the relay's generic side and of the registration API, speaking the
 * documented lines, for tests of what the agent sends and logs (test/client/agent-reports.test.ts,
 * test/cli/agent-observability.test.ts). Each helper registers its own teardown in `cleanup`.
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';

/** A TCP echo server that can be stopped and started again on the same port. */
export async function restartableEcho(cleanup: Array<() => unknown>, port = 0) {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  cleanup.push(close);
  return { port: (server.address() as AddressInfo).port, close };
}

/** A parked connection at the fake relay: the line the agent sent, and the socket. */
export interface FakePark {
  line: string;
  socket: Socket;
}

/** A generic relay that records each cookie line and keeps the socket for the test to pair. */
export async function fakeGenericRelay(cleanup: Array<() => unknown>) {
  const parks: FakePark[] = [];
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => undefined);
    let buf = '';
    const onData = (c: Buffer) => {
      buf += c.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl === -1) return;
      socket.off('data', onData);
      socket.pause();
      parks.push({ line: buf.slice(0, nl), socket });
    };
    socket.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(
    () =>
      new Promise<void>((r) => {
        for (const p of parks) p.socket.destroy();
        server.close(() => r());
      }),
  );
  /** The newest park still open. */
  const open = () => [...parks].reverse().find((p) => !p.socket.destroyed && !p.socket.readableEnded);
  return { port: (server.address() as AddressInfo).port, parks, open };
}

/** A registration API that accepts any code and answers a triple for the fake relay. */
export async function fakeApi(
  cleanup: Array<() => unknown>,
  relayPort: number,
  cookie: string,
  relayOptions?: string[],
) {
  const codes: string[] = [];
  const server: HttpServer = createHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    codes.push(url.searchParams.get('response') ?? '');
    const result = {
      host: '127.0.0.1',
      port: relayPort,
      cookie: `R${cookie}`,
      ...(relayOptions && { relayOptions }),
    };
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ result }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, codes };
}

/** Plays the relay's side of a pairing: status line, payload, reads the echo until the agent ends. */
export async function pair(park: FakePark, status: string, payload: string): Promise<string> {
  const s = park.socket;
  const got: Buffer[] = [];
  s.on('data', (c: Buffer) => got.push(c));
  s.resume();
  s.write(`${status}\n${payload}`);
  s.end();
  await new Promise<void>((r) => s.once('close', () => r()));
  return Buffer.concat(got).toString('latin1');
}
