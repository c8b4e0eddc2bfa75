/**
 * The agent and the mobile library against servers that answer the way the original
 * node-rendezvous servers do (observed facts in the compat notes): errors as
 * `200 {"error":{…}}`, and the original relay texts such as `-ERR not registered`. The servers
 * here are small real HTTP and TCP servers on 127.0.0.1 speaking those bytes; the library is
 * the real one.
 */
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { secretSettingsFrom } from '../../client/codes.js';
import { totpParamsFrom } from '../../client/hidden-server.js';
import { codeForStep, timeStep } from '../../core/totp.js';
import { connect, createHiddenServer, type HiddenServer, isRendezvousError } from '../../index.js';
import { waitFor } from '../support/wait.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const fn of cleanup.splice(0)) fn();
});

/** An original-style registration API: `answer` decides each request's 200 body. */
async function originalApi(
  answer: (method: string, url: string) => unknown,
): Promise<{ url: string; puts: () => number }> {
  let puts = 0;
  const server: HttpServer = createHttpServer((req, res) => {
    if (req.method === 'PUT') puts++;
    // The original sends no Content-Type.
    res.end(JSON.stringify(answer(req.method ?? 'GET', req.url ?? '/')));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(() => server.close());
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, puts: () => puts };
}

/** A 1 s step keeps retries on later steps short; the secret is what the fake never checks. */
const SECRET = 'otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&period=1';

function track(server: HiddenServer): HiddenServer {
  cleanup.push(() => server.close());
  return server;
}

describe('a 200 answer carrying an error body is that error', () => {
  it('PUT "invalid request" (a wrong secret on the original) ends in AUTH_FAILED, not endless retries', async () => {
    const api = await originalApi(() => ({ error: { permanent: false, diagnostic: 'invalid request' } }));
    const server = track(createHiddenServer({ api: api.url, uuid: 'orig-wrong', secret: SECRET }));
    let reconnects = 0;
    server.on('reconnecting', () => reconnects++);
    const err = await new Promise<Error>((resolve, reject) => {
      server.once('error', resolve);
      setTimeout(() => reject(new Error(`no error; ${reconnects} reconnects, ${api.puts()} PUTs`)), 15_000);
      server.listen();
    });
    expect(isRendezvousError(err, 'AUTH_FAILED')).toBe(true);
    expect(reconnects).toBe(0);
    // The current step and the next ones were tried before it concluded.
    expect(api.puts()).toBeGreaterThanOrEqual(3);
  });

  it('GET "not registered" rejects connect() with NOT_REGISTERED', async () => {
    const api = await originalApi(() => ({ error: { permanent: false, diagnostic: 'not registered' } }));
    await expect(connect({ api: api.url, uuid: 'orig-none', timeoutMs: 5_000 })).rejects.toSatisfy(
      (e) => isRendezvousError(e, 'NOT_REGISTERED') && (e as Error).message === 'not registered',
    );
  });
});

describe('original relay texts', () => {
  it('-ERR not registered on a park makes the agent register again and park with the new cookie', async () => {
    const cookies: string[] = [];
    let parkedWithNewCookie = false;
    const sockets = new Set<Socket>();
    // The original relay: it knows only the latest cookie; an older one is "not registered".
    const relay: Server = createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      s.once('data', (line) => {
        const cookie = line.toString().trim().slice(1);
        if (cookie !== cookies.at(-1) || cookies.length < 2) s.end('-ERR not registered\n');
        else parkedWithNewCookie = true;
      });
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    cleanup.push(() => {
      for (const s of sockets) s.destroy();
      relay.close();
    });
    const relayPort = (relay.address() as AddressInfo).port;
    // The original API: only the current step's code (no drift window), reusable within it.
    const params = totpParamsFrom(SECRET);
    const api = await originalApi((_method, url) => {
      const code = new URL(url, 'http://x').searchParams.get('response');
      if (code !== codeForStep(params, timeStep(params, Date.now()))) {
        return { error: { permanent: false, diagnostic: 'invalid request' } };
      }
      const c = randomUUID();
      cookies.push(c);
      return { result: { host: '127.0.0.1', port: relayPort, cookie: `R${c}` } };
    });
    const server = track(
      createHiddenServer({
        api: api.url,
        uuid: 'orig-err',
        secret: SECRET,
        backoff: { minMs: 20, maxMs: 200 },
      }),
    );
    server.on('error', () => undefined);
    server.listen();
    await waitFor(() => parkedWithNewCookie, 15_000, `a park with a fresh cookie (${api.puts()} PUTs)`);
    expect(api.puts()).toBeGreaterThanOrEqual(2);
    expect(server.listening).toBe(true);
  });
});

describe('transient refusals', () => {
  it('429 and 503 with Retry-After are waited out, then the agent registers', async () => {
    const holder: Server = createServer((s) => s.on('error', () => undefined));
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    cleanup.push(() => holder.close());
    let n = 0;
    const server: HttpServer = createHttpServer((_req, res) => {
      n++;
      if (n === 1) res.writeHead(429, { 'retry-after': '1' });
      else if (n === 2) res.writeHead(503, { 'retry-after': '1' });
      res.end(
        JSON.stringify(
          n <= 2
            ? { error: { permanent: false, diagnostic: 'try again later' } }
            : { result: { host: '127.0.0.1', port: (holder.address() as AddressInfo).port, cookie: 'Rabc' } },
        ),
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanup.push(() => server.close());
    const agent = track(
      createHiddenServer({
        api: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        uuid: 'transient',
        secret: SECRET,
      }),
    );
    const waits: number[] = [];
    agent.on('reconnecting', (ms: number) => waits.push(ms));
    agent.on('error', () => undefined);
    await new Promise<void>((resolve) => agent.once('registered', () => resolve()).listen());
    expect(n).toBe(3);
    expect(waits.length).toBe(2);
    for (const w of waits) expect(w).toBeGreaterThanOrEqual(1_000);
    expect(agent.listening).toBe(true);
  });
});

describe("the original's identity URIs", () => {
  it("a digits=40 URI (what node-rendezvous wrote) means the original's whole truncation value", () => {
    const uri =
      'otpauth://totp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=40&period=30&encoding=speakeasy';
    const s = secretSettingsFrom(uri);
    expect(s.digits).toBe('original');
    expect(s.encoding).toBe('speakeasy');
    expect(s.params.step).toBe(30);
  });
});
