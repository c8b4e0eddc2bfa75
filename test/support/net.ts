/** Socket helpers shared by the tests: real sockets on 127.0.0.1 only. */
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type Server, type Socket } from 'node:net';

/** Hex sha256 of a buffer. */
export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Starts a TCP echo server on 127.0.0.1 (half-close aware: echoes, then ends). */
export async function startEchoServer(): Promise<{
  port: number;
  server: Server;
  close: () => Promise<void>;
}> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    server,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Connects to 127.0.0.1:port with half-close allowed. */
export function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** What a raw client saw: every byte until the relay closed, and how long that took. */
export interface RawOutcome {
  text: string;
  closed: boolean;
  ms: number;
}

/**
 * Sends `payload` (optionally leaving the socket open) and collects bytes until the server
 * closes or `waitMs` passes.
 */
export async function rawExchange(
  port: number,
  payload: Buffer | string | null,
  waitMs = 3_000,
): Promise<RawOutcome> {
  const s = await dial(port);
  const started = Date.now();
  const chunks: Buffer[] = [];
  return new Promise((resolve) => {
    const finish = (closed: boolean) => {
      clearTimeout(t);
      s.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed, ms: Date.now() - started });
    };
    const t = setTimeout(() => finish(false), waitMs);
    s.on('data', (c) => chunks.push(c));
    s.on('end', () => finish(true));
    s.on('error', () => finish(true));
    if (payload !== null) s.write(payload);
  });
}

/** Reads everything until the socket ends. */
export function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

/** Resolves once `s` emits 'close', or rejects after `ms`. */
export function closedWithin(s: Socket, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (s.destroyed) return resolve();
    const t = setTimeout(() => reject(new Error(`socket not closed within ${ms} ms`)), ms);
    s.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

/** POSTs `body` to `url` on a fresh connection and resolves to the response body. */
export function postBody(url: string, body: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A port on 127.0.0.1 that is free to listen on now (bound once, then released). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/**
 * Low ports: listen(0) never hands them out and nothing in the suite binds them, so they stay
 * closed. A released ephemeral port does not: with a second suite running, another test bound
 * one a moment after it was "closed", and a hidden server's dead target answered.
 */
const REFUSING_PORTS = [1, 3, 4, 6, 8, 10];

/** A port on 127.0.0.1 that nothing listens on, and nothing will (a connection is refused). */
export async function closedPort(): Promise<number> {
  for (const port of REFUSING_PORTS) if (await refuses(port)) return port;
  throw new Error(`every one of the ports ${REFUSING_PORTS.join(', ')} on 127.0.0.1 accepts connections`);
}

function refuses(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}
