/**
 * A scripted relay that refuses for quota (issue 30), for tests of how the agent, the library and
 * the CLI take it: a generic port answering `-ERR quota exceeded` to `R`/`I` lines (or, once told
 * to stop refusing, keeping parks), an HTTP port answering `429` the way relay/http.ts's
 * `respondError` does (its own function: the same head, JSON body and `Retry-After`), and a
 * registration API that hands out triples for the generic port. Every connection is counted
 * with its time, so a test can tell that an agent does not dial again within its wait.
 */
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { QUOTA_EXCEEDED_MESSAGE, secondsToNextMonth } from '../../core/errors.js';
import { respondError } from '../../relay/http.js';

/** One connection the scripted relay saw: when, and its first line (the cookie line, or the request line). */
export interface QuotaAttempt {
  at: number;
  line: string;
}

/** Starts a raw TCP server on 127.0.0.1 that hands each connection's first line to `onLine`. */
async function lineServer(
  cleanup: Array<() => unknown>,
  onLine: (socket: Socket, line: string) => void,
): Promise<{ port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = '';
    const onData = (c: Buffer) => {
      buf += c.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl === -1) return;
      socket.off('data', onData);
      onLine(socket, buf.slice(0, nl).replace(/\r$/, ''));
    };
    socket.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as AddressInfo).port, sockets };
}

/**
 * The generic port: `-ERR quota exceeded` (or `state.diagnostic`) to every cookie line while `refusing` is true; after
 * that (the operator raised the quota) an `R` line stays parked and an `I` line gets `-ERR no
 * hidden server`.
 */
export async function quotaGenericRelay(cleanup: Array<() => unknown>) {
  const attempts: QuotaAttempt[] = [];
  const parked: Socket[] = [];
  /** `diagnostic`: what the `-ERR` says (the concurrency cap's words, for a BUSY test). */
  const state = { refusing: true, diagnostic: QUOTA_EXCEEDED_MESSAGE };
  const { port } = await lineServer(cleanup, (socket, line) => {
    attempts.push({ at: Date.now(), line });
    if (state.refusing) socket.end(`-ERR ${state.diagnostic}\n`);
    else if (line.startsWith('R')) parked.push(socket);
    else socket.end('-ERR no hidden server\n');
  });
  return { port, attempts, parked, state };
}

/**
 * The HTTP port: every CONNECT park and every mobile request gets `429` with the relay's own
 * refusal body (`{"error":{"permanent":false,"diagnostic":"quota exceeded"}}`) and `Retry-After`
 * (seconds to the next UTC month), written by relay/http.ts's `respondError`.
 */
export async function quotaHttpRelay(cleanup: Array<() => unknown>) {
  const attempts: QuotaAttempt[] = [];
  const { port } = await lineServer(cleanup, (socket, line) => {
    attempts.push({ at: Date.now(), line });
    // The rest of the head is not needed: the relay answers once it knows the identity.
    respondError(socket, 429, QUOTA_EXCEEDED_MESSAGE, {
      'Retry-After': String(secondsToNextMonth(Date.now())),
    });
  });
  return { url: `http://127.0.0.1:${port}`, attempts };
}

/**
 * A registration API for the scripted generic relay: a PUT (registration) answers an `R`
 * triple (or, with `refuseRegistration`, `429 quota exceeded`), a GET (look-up) an `I` triple,
 * both naming `relayPort`. Counts each kind.
 */
export async function quotaApi(
  cleanup: Array<() => unknown>,
  relayPort: number,
  opts: { refuseRegistration?: boolean } = {},
) {
  const calls = { put: 0, get: 0 };
  const server = createHttpServer((req, res) => {
    const put = req.method === 'PUT';
    if (put) calls.put++;
    else calls.get++;
    if (put && opts.refuseRegistration) {
      // Should an API refuse the registration for quota, in the relay's words and status.
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '3600' });
      res.end(JSON.stringify({ error: { permanent: false, diagnostic: QUOTA_EXCEEDED_MESSAGE } }));
      return;
    }
    const cookie = `${put ? 'R' : 'I'}quotaCookie0123456789`;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ result: { host: '127.0.0.1', port: relayPort, cookie } }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, calls };
}
