/**
 * Small real servers on 127.0.0.1 that answer the way the original node-rendezvous servers do
 * (shared/compat/original-behaviour.md, and the code rule of test/compat/original-model.ts):
 * the registration API (one registration per uuid, each PUT a new cookie; only the current
 * step's code, at the length the client sent, reusable within its step; errors as
 * `200 {"error":…}`), the generic relay (one parked socket per cookie: a second `R` with the
 * same cookie closes the first), and the HTTP-specific relay (CONNECT with the current code, no
 * cookie header; mobile requests named by Basic credentials, 404 when nothing is parked).
 */
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { originalCode, stepAt } from '../compat/original-model.js';

/** One identity of the original: its base32 secret (codes computed the speakeasy way). */
export interface OriginalIdentity {
  uuid: string;
  base32: string;
}

/** True when `code` is what the original accepts now for `base32` (current step, submitted length, ≥ 6). */
export function originalAccepts(base32: string, code: string, nowMs = Date.now()): boolean {
  if (!/^[0-9]{6,}$/.test(code)) return false;
  return originalCode(base32, stepAt(nowMs), code.length) === code;
}

/** A running original-style stack and what it saw. */
export interface OriginalStack {
  apiUrl: string;
  relayPort: number;
  httpUrl: string;
  /** `response` values of every PUT, in order. */
  responses: string[];
  /** Parks the generic relay accepted (an `R` line with the current cookie). */
  parks(): number;
  /** Sockets parked at the generic relay now. */
  parkedNow(): number;
  /** CONNECTs the HTTP relay accepted, and refused. */
  connects: { accepted: number; refused: number };
  close(): void;
}

/** Starts the three original-style servers for `ids`. */
export async function startOriginalStack(ids: OriginalIdentity[]): Promise<OriginalStack> {
  const byUuid = new Map(ids.map((i) => [i.uuid, i]));
  const cookieOf = new Map<string, string>(); // uuid → current cookie
  const parked = new Map<string, Socket>(); // cookie → its one parked socket
  const httpParked = new Map<string, Socket[]>(); // uuid → parked CONNECT sockets
  const sockets = new Set<Socket>();
  const responses: string[] = [];
  const connects = { accepted: 0, refused: 0 };
  let parks = 0;

  const relay: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let buf = '';
    const onData = (c: Buffer) => {
      buf += c.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl === -1) return;
      s.off('data', onData);
      const line = buf.slice(0, nl);
      const kind = line[0];
      const cookie = line.slice(1);
      const uuid = [...cookieOf].find(([, c2]) => c2 === cookie)?.[0];
      if (!uuid) return void s.end('-ERR not registered\n');
      if (kind === 'R') {
        // One parked socket per cookie: the newer park closes the older one.
        parked.get(cookie)?.destroy();
        parked.set(cookie, s);
        parks++;
        s.once('close', () => {
          if (parked.get(cookie) === s) parked.delete(cookie);
        });
        return;
      }
      const hidden = parked.get(cookie);
      if (!hidden) return void s.end('-ERR not ready\n');
      parked.delete(cookie);
      hidden.write('+OK\n');
      s.write('+OK\n');
      const rest = buf.slice(nl + 1);
      if (rest) hidden.write(Buffer.from(rest, 'latin1'));
      s.pipe(hidden);
      hidden.pipe(s);
    };
    s.on('data', onData);
  });

  const api: HttpServer = createHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const uuid = url.searchParams.get('uuid') ?? '';
    const answer = (body: unknown) => res.end(JSON.stringify(body));
    if (req.method === 'PUT') {
      const response = url.searchParams.get('response') ?? '';
      responses.push(response);
      const id = byUuid.get(uuid);
      if (!id || !originalAccepts(id.base32, response))
        return answer({ error: { permanent: false, diagnostic: 'invalid request' } });
      const cookie = randomUUID();
      const old = cookieOf.get(uuid);
      if (old) parked.get(old)?.destroy();
      cookieOf.set(uuid, cookie);
      return answer({ result: { host: '127.0.0.1', port: relayPort, cookie: `R${cookie}` } });
    }
    const cookie = cookieOf.get(uuid);
    if (!cookie) return answer({ error: { permanent: false, diagnostic: 'not registered' } });
    return answer({ result: { host: '127.0.0.1', port: relayPort, cookie: `I${cookie}` } });
  });

  const http: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      s.off('data', onData);
      const head = buf.subarray(0, end + 4).toString('latin1');
      const refuse = (status: number, diagnostic: string) =>
        s.end(
          `HTTP/1.1 ${status}\r\nConnection: close\r\n\r\n${JSON.stringify({ error: { permanent: false, diagnostic } })}`,
        );
      const m = /^CONNECT uuid:([^?\s]+)\?response=([^\s]*) HTTP\/1\.1\r\n/.exec(head);
      if (head.startsWith('CONNECT ')) {
        if (!m) return refuse(403, 'invalid request');
        const id = byUuid.get(decodeURIComponent(m[1] as string));
        if (!id || !originalAccepts(id.base32, decodeURIComponent(m[2] as string))) {
          connects.refused++;
          return refuse(401, 'invalid request');
        }
        connects.accepted++;
        s.write('HTTP/1.1 200\r\n\r\n');
        const list = httpParked.get(id.uuid) ?? [];
        list.push(s);
        httpParked.set(id.uuid, list);
        s.once('close', () => {
          const l = httpParked.get(id.uuid) ?? [];
          httpParked.set(
            id.uuid,
            l.filter((x) => x !== s),
          );
        });
        return;
      }
      // A mobile request: Basic credentials whose user name is the uuid.
      const auth = /\r\nauthorization: basic ([A-Za-z0-9+/=]+)\r\n/i.exec(head);
      const uuid = auth
        ? Buffer.from(auth[1] as string, 'base64')
            .toString()
            .split(':')[0]
        : undefined;
      const hidden = uuid ? httpParked.get(uuid)?.shift() : undefined;
      if (!hidden) return refuse(404, 'not registered');
      const forwarded = head.replace(/\r\nauthorization: [^\r]*/i, '');
      hidden.write(Buffer.concat([Buffer.from(forwarded, 'latin1'), buf.subarray(end + 4)]));
      s.pipe(hidden);
      hidden.pipe(s);
    };
    s.on('data', onData);
  });

  const listen = (srv: Server | HttpServer) =>
    new Promise<number>((r) => srv.listen(0, '127.0.0.1', () => r((srv.address() as AddressInfo).port)));
  const relayPort = await listen(relay);
  const apiPort = await listen(api);
  const httpPort = await listen(http);
  return {
    apiUrl: `http://127.0.0.1:${apiPort}`,
    relayPort,
    httpUrl: `http://127.0.0.1:${httpPort}`,
    responses,
    parks: () => parks,
    parkedNow: () => parked.size,
    connects,
    close: () => {
      for (const s of sockets) s.destroy();
      relay.close();
      api.close();
      http.close();
    },
  };
}
