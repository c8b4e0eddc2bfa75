/**
 * The generic protocol over TLS, as on AWS with a certificate: a local TLS terminator stands in
 * for the NLB's TLS listener (forwarding to the relay's plain generic port), and a plain TCP
 * forwarder stands in for the NLB's TCP listener, counting what crosses it in clear. Triples carry
 * the additive `tlsPort`; the real CLI (agent and mobile client, as child processes that trust the
 * test certificate through NODE_EXTRA_CA_CERTS) must use TLS, so no cookie crosses the plain port,
 * while an original client that ignores `tlsPort` still works in plain TCP.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack.js';
import { runCli, spawnCli, stop, waitForOutput } from '../support/cli.js';
import { dial, readAll, sha256, startEchoServer } from '../support/net.js';
import { provision, startStack } from '../support/stack.js';

const CERT = fileURLToPath(new URL('./tls/relay-test-cert.pem', import.meta.url));
const KEY = fileURLToPath(new URL('./tls/relay-test-key.pem', import.meta.url));

/** A forwarder to the relay's generic port (resolved late: the relay starts after it). */
interface Forwarder {
  server: Server;
  port: number;
  /** Connections accepted, and every byte clients sent through it. */
  accepted: number;
  seen: Buffer[];
  sockets: Set<Socket>;
}

let relayPort = 0;

function forward(client: Socket, f: Forwarder) {
  f.accepted++;
  f.sockets.add(client);
  const upstream = connect({ host: '127.0.0.1', port: relayPort, allowHalfOpen: true });
  f.sockets.add(upstream);
  client.on('data', (c: Buffer) => f.seen.push(Buffer.from(c)));
  client.pipe(upstream);
  upstream.pipe(client);
  const end = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', end);
  upstream.on('error', end);
  client.on('close', () => f.sockets.delete(client));
  upstream.on('close', () => f.sockets.delete(upstream));
}

/** Starts `server` on 127.0.0.1 and returns its forwarder state. */
async function forwarder(make: (onSocket: (s: Socket) => void) => Server): Promise<Forwarder> {
  const f = { accepted: 0, seen: [], sockets: new Set(), port: 0 } as unknown as Forwarder;
  f.server = make((s) => forward(s, f));
  await new Promise<void>((r) => f.server.listen(0, '127.0.0.1', r));
  f.port = (f.server.address() as AddressInfo).port;
  return f;
}

let plain: Forwarder;
let tls: Forwarder;
let stack: LocalStack;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
let agent: ChildProcess | undefined;
let env: Record<string, string>;

beforeAll(async () => {
  plain = await forwarder((onSocket) => createServer({ allowHalfOpen: true }, onSocket));
  tls = await forwarder((onSocket) =>
    createTlsServer({ key: readFileSync(KEY), cert: readFileSync(CERT), allowHalfOpen: true }, onSocket),
  );
  stack = await startStack({
    relay: { pairWaitMs: 5_000 },
    // What the register handler gets on AWS with a certificate: the plain port and the TLS port.
    policy: { relayPort: plain.port, relayTlsPort: tls.port },
  });
  relayPort = stack.relayPort;
  echo = await startEchoServer();
  const id = await provision(stack, { uuid: 'tls-echo' });
  env = { ...stack.env, NODE_EXTRA_CA_CERTS: CERT };
  agent = spawnCli(['expose', '--uuid', 'tls-echo', '--to', `127.0.0.1:${echo.port}`], {
    ...env,
    RENDEZVOUS_SECRET: id.secret,
  });
  await waitForOutput(agent, /registered/, 20_000, 'stderr');
  // The agent's parked socket reaches the relay through one of the two forwarders.
  const deadline = Date.now() + 10_000;
  while (tls.accepted + plain.accepted === 0 && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
}, 60_000);

afterAll(async () => {
  await stop(agent);
  for (const f of [plain, tls]) {
    if (!f) continue;
    f.server.close();
    for (const s of f.sockets) s.destroy();
  }
  await echo?.close();
  await stack?.close();
});

describe('generic protocol over TLS (triple field tlsPort)', () => {
  it("the triple keeps the seed's three fields and adds tlsPort", async () => {
    const res = await fetch(`${stack.apiUrl}/?uuid=tls-echo`);
    const { result } = (await res.json()) as { result: Record<string, unknown> };
    expect(Object.keys(result).sort()).toEqual(['cookie', 'host', 'port', 'relayOptions', 'tlsPort']);
    expect(result).toMatchObject({ host: '127.0.0.1', port: plain.port, tlsPort: tls.port });
  });

  it('our agent parks over TLS: its R cookie never crosses the plain port', () => {
    expect(tls.accepted).toBeGreaterThanOrEqual(1);
    expect(plain.accepted).toBe(0);
  });

  it('our mobile client rendezvouses over TLS, end to end, nothing in clear', async () => {
    const payload = randomBytes(256 * 1024);
    const before = tls.accepted;
    const out = await runCli(['connect', '--uuid', 'tls-echo'], env, payload);
    expect(out.code, out.stderr).toBe(0);
    expect(sha256(out.stdout)).toBe(sha256(payload));
    expect(tls.accepted).toBeGreaterThan(before);
    expect(plain.accepted).toBe(0);
    expect(Buffer.concat(plain.seen).length).toBe(0);
  }, 30_000);

  it('an original client, which ignores tlsPort, still rendezvouses in plain TCP on port', async () => {
    const res = await fetch(`${stack.apiUrl}/?uuid=tls-echo`);
    const { result } = (await res.json()) as { result: { port: number; cookie: string } };
    const s = await dial(result.port);
    s.write(`${result.cookie}\nhello`);
    s.end();
    const text = (await readAll(s)).toString();
    expect(text).toBe('+OK\nhello');
    expect(plain.accepted).toBe(1);
    expect(Buffer.concat(plain.seen).toString()).toContain(result.cookie);
  }, 30_000);

  it('a client that cannot verify the certificate fails clearly and does not fall back to plain TCP', async () => {
    const before = plain.accepted;
    const { NODE_EXTRA_CA_CERTS: _trusted, ...untrusting } = env;
    const out = await runCli(
      ['connect', '--uuid', 'tls-echo'],
      { ...untrusting, NODE_EXTRA_CA_CERTS: '' },
      'x',
    );
    expect(out.code).not.toBe(0);
    expect(out.stderr).toMatch(/TLS to 127\.0\.0\.1:\d+ failed: .*(self-signed|certificate)/i);
    expect(plain.accepted).toBe(before);
  }, 30_000);
});
