/**
 * `rendezvous smoke`: a check a person (or a pipeline's post-deploy step) runs against one
 * deployed region or the local stack, with an identity kept for the purpose. It registers, parks,
 * pairs and moves bytes both ways through both protocols — generic (the API's triple, the relay's
 * TCP port) and HTTP-specific (CONNECT parking, then a plain HTTP request) — to a short-lived
 * target inside this process, prints each step, and names the step that failed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Command } from 'commander';
import { type ApiUrls, apiUrlList, lookupWithApi, registerWithApi } from '../client/api.js';
import { totpParamsFrom } from '../client/hidden-server.js';
import { dialRelay } from '../client/relay-conn.js';
import { isRendezvousError, RendezvousError } from '../core/errors.js';
import { encodeConnect, HeadDecoder, parseResponseHead, type ResponseHead } from '../core/http-head.js';
import { connectTcp, readPreamble } from '../core/socket-reader.js';
import { splice } from '../core/splice.js';
import { codeForStep, type TotpParams, timeStep } from '../core/totp.js';
import type { RendezvousTriple } from '../core/triple.js';

/** The steps, in order; a failure names one of them. */
export const SMOKE_STEPS = [
  'register (generic)',
  'park (generic)',
  'lookup (generic)',
  'pair (generic)',
  'bytes (generic)',
  'park (http)',
  'request (http)',
] as const;

/** One step's name. */
export type SmokeStep = (typeof SMOKE_STEPS)[number];

/** Default bound on each step's network work (waiting for a usable code is not counted). */
export const SMOKE_STEP_TIMEOUT_MS = 15_000;

/**
 * Distinct code steps refused before the secret is taken for wrong. A code is accepted once:
 * a smoke run moments ago (another region's, in the same step) used this step's codes, so a
 * refusal is first taken for that and the next step's code is tried.
 */
export const SMOKE_REFUSED_STEPS = 3;

/** Bytes sent each way through each protocol. */
export const SMOKE_PAYLOAD_BYTES = 64 * 1024;

/** What a smoke run needs. */
export interface SmokeOptions {
  api: ApiUrls;
  uuid: string;
  /** Base32 secret or otpauth URI (from the environment, never argv). */
  secret: string;
  /** The relay's HTTP-specific endpoint, `http://host:port` or `https://host`. */
  relayHttp: string;
  stepTimeoutMs?: number;
  /** Each finished step, with its duration. */
  onStep?: (step: SmokeStep, ms: number) => void;
}

/** A step that failed, with the reason. */
export class SmokeFailure extends Error {
  constructor(
    readonly step: SmokeStep,
    readonly reason: string,
  ) {
    super(`step "${step}" failed: ${reason}`);
  }
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Codes of increasing steps inside the ±1 drift window; each refused step moves on. */
class Codes {
  private last = -1;
  private readonly refused = new Set<number>();

  constructor(private readonly params: TotpParams) {}

  /** The next unused code, waiting until its step is inside the window. */
  async next(): Promise<{ code: string; step: number }> {
    for (;;) {
      const now = Date.now();
      const nowStep = timeStep(this.params, now);
      const step = Math.max(nowStep, this.last + 1);
      if (step <= nowStep + 1) return { code: codeForStep(this.params, step), step };
      await new Promise((r) => setTimeout(r, (step - 1) * this.params.step * 1000 - now + 50));
    }
  }

  /** A code was accepted: the refusals before it were replays, not a wrong secret. */
  accepted(step: number): void {
    this.last = Math.max(this.last, step);
    this.refused.clear();
  }

  /** A code was refused; true when enough steps were refused to conclude the secret is wrong. */
  refusedNow(step: number): boolean {
    this.last = Math.max(this.last, step);
    this.refused.add(step);
    return this.refused.size >= SMOKE_REFUSED_STEPS;
  }
}

function reasonOf(err: unknown): string {
  if (isRendezvousError(err, 'AUTH_FAILED'))
    return `authentication failed: codes of ${SMOKE_REFUSED_STEPS} steps refused (unknown uuid, wrong RENDEZVOUS_SECRET, or an agent is using this identity)`;
  return (err as Error).message || String(err);
}

/** Resolves like `p`, or rejects when `ms` pass first. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

/** Reads everything until the far side ends. */
function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

/** Opens a connection to the HTTP-specific endpoint (TLS for https). */
async function dialHttpRelay(relay: URL, timeoutMs: number): Promise<Socket> {
  const port = Number(relay.port) || (relay.protocol === 'https:' ? 443 : 80);
  const tcp = await connectTcp(relay.hostname, port, { timeoutMs });
  if (relay.protocol !== 'https:') return tcp;
  return within(
    new Promise<Socket>((resolve, reject) => {
      const s = tlsConnect({ socket: tcp, servername: relay.hostname });
      s.once('secureConnect', () => resolve(s as unknown as Socket));
      s.once('error', (err) => {
        tcp.destroy();
        reject(new RendezvousError('UNREACHABLE', `TLS to ${relay.host} failed: ${err.message}`));
      });
    }),
    timeoutMs,
    'TLS handshake',
  );
}

/** Runs every step in order; resolves when all passed, rejects with a SmokeFailure naming the first that did not. */
export async function runSmoke(opts: SmokeOptions): Promise<void> {
  const ms = opts.stepTimeoutMs ?? SMOKE_STEP_TIMEOUT_MS;
  const params = totpParamsFrom(opts.secret);
  const api = apiUrlList(opts.api);
  const relay = new URL(opts.relayHttp);
  const codes = new Codes(params);
  const cleanup: Array<() => void> = [];
  const step = async <T>(name: SmokeStep, run: () => Promise<T>): Promise<T> => {
    const started = Date.now();
    try {
      const out = await run();
      opts.onStep?.(name, Date.now() - started);
      return out;
    } catch (err) {
      throw err instanceof SmokeFailure ? err : new SmokeFailure(name, reasonOf(err));
    }
  };

  // The short-lived targets: a TCP echo (generic) and an HTTP echo (HTTP-specific).
  const echo: Server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  const web: HttpServer = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-smoke-sha256': sha(body) });
      res.end(body);
    });
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  cleanup.push(
    () => echo.close(),
    () => web.close(),
    () => web.closeAllConnections(),
  );
  const target = (server: Server | HttpServer) => (server.address() as AddressInfo).port;

  try {
    // --- generic protocol ---
    const triple = await step('register (generic)', async () => {
      for (;;) {
        const { code, step: s } = await codes.next();
        try {
          const t = await within(registerWithApi(api, opts.uuid, code), ms * api.length, 'answer');
          codes.accepted(s);
          return t;
        } catch (err) {
          if (isRendezvousError(err, 'AUTH_FAILED') && !codes.refusedNow(s)) continue;
          throw err;
        }
      }
    });
    let parkedSocket: Socket | undefined;
    let markParked = () => {};
    const onParked = new Promise<void>((resolve) => {
      markParked = resolve;
    });
    const hiddenPaired = dialRelay(triple, {
      onConnected: (s) => {
        parkedSocket = s;
        markParked();
      },
    });
    cleanup.push(() => parkedSocket?.destroy());
    // A refusal (-ERR) of the park can only come before a mobile client does: it fails this step.
    hiddenPaired.catch(() => undefined);
    await step('park (generic)', () =>
      within(Promise.race([onParked, hiddenPaired.then(() => {})]), ms, 'park'),
    );
    const mobileTriple: RendezvousTriple = await step('lookup (generic)', () =>
      within(lookupWithApi(api, opts.uuid), ms * api.length, 'answer'),
    );
    const mobile = await step('pair (generic)', async () => {
      const refusedPark = hiddenPaired.then(
        () => new Promise<never>(() => {}),
        (err) => {
          throw new SmokeFailure('park (generic)', `the relay refused the park: ${reasonOf(err)}`);
        },
      );
      const dialed = dialRelay(mobileTriple, { statusTimeoutMs: ms });
      dialed.then((d) => cleanup.push(() => d.socket.destroy())).catch(() => undefined);
      const m = await within(Promise.race([dialed, refusedPark]), ms, '+OK');
      const h = await within(hiddenPaired, ms, '+OK on the parked side');
      const toTarget = await connectTcp('127.0.0.1', target(echo), { timeoutMs: ms });
      splice(h.socket, toTarget);
      return m.socket;
    });
    await step('bytes (generic)', async () => {
      const payload = randomBytes(SMOKE_PAYLOAD_BYTES);
      const back = readAll(mobile);
      mobile.end(payload);
      const got = await within(back, ms, 'echo');
      if (sha(got) !== sha(payload))
        throw new Error(`sent ${payload.length} bytes, got ${got.length} different ones back`);
    });

    // --- HTTP-specific protocol ---
    const parkedHttp = await step('park (http)', async () => {
      for (;;) {
        const { code, step: s } = await codes.next();
        const socket = await dialHttpRelay(relay, ms);
        cleanup.push(() => socket.destroy());
        socket.write(encodeConnect({ uuid: opts.uuid, response: code, host: relay.host }));
        const decoder = new HeadDecoder();
        const head: ResponseHead = await readPreamble(
          socket,
          (chunk) => {
            const d = decoder.push(chunk);
            return d && { value: parseResponseHead(d.text), rest: d.rest };
          },
          { what: 'answer to CONNECT', timeoutMs: ms },
        );
        if (head.status === 200) {
          codes.accepted(s);
          return socket;
        }
        socket.destroy();
        if (head.status === 401 && !codes.refusedNow(s)) continue;
        if (head.status === 401) throw new RendezvousError('AUTH_FAILED', 'refused');
        throw new Error(`the relay answered CONNECT with ${head.status}`);
      }
    });
    await step('request (http)', async () => {
      // The first bytes of a request reach the parked socket: hand it to the HTTP target.
      parkedHttp.once('readable', () => {
        void connectTcp('127.0.0.1', target(web), { timeoutMs: ms }).then(
          (toTarget) => splice(parkedHttp, toTarget),
          () => parkedHttp.destroy(),
        );
      });
      const payload = randomBytes(SMOKE_PAYLOAD_BYTES);
      const post = (url: URL) =>
        fetch(url, { method: 'POST', body: payload, signal: AbortSignal.timeout(ms) });
      const url = new URL(relay);
      url.pathname = '/smoke';
      url.searchParams.set('rendezvous', opts.uuid);
      let res = await post(url);
      if (res.status === 403) {
        // A relay routing by host (RELAY_HTTP_DOMAIN) serves no hidden server on its own name:
        // ask <uuid>.<its name> (the refusal came before any pairing, the park is still there).
        await res.arrayBuffer();
        const hosted = new URL(relay);
        hosted.hostname = `${opts.uuid.toLowerCase()}.${hosted.hostname}`;
        hosted.pathname = '/smoke';
        res = await post(hosted);
      }
      const got = Buffer.from(await res.arrayBuffer());
      if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${got.toString('utf8').slice(0, 200)}`);
      if (sha(got) !== sha(payload) || res.headers.get('x-smoke-sha256') !== sha(payload))
        throw new Error(`sent ${payload.length} bytes, got ${got.length} different ones back`);
    });
  } finally {
    for (const c of cleanup) c();
  }
}

/** Adds `rendezvous smoke` to the CLI. */
export function addSmokeCommand(program: Command, fail: (message: string) => never): void {
  program
    .command('smoke')
    .description(
      'check a deployed region (or the local stack) end to end with a kept identity: register, park, pair and move bytes through both protocols (secret from RENDEZVOUS_SECRET)',
    )
    .requiredOption('--uuid <uuid>', 'the identity kept for smoke tests')
    .option(
      '--api <url>',
      'registration API (default: RENDEZVOUS_API); repeat or comma-separate for fail-over',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option('--relay-http <url>', "the relay's HTTP-specific endpoint (default: RENDEZVOUS_RELAY_HTTP)")
    .option('--step-timeout <ms>', 'bound on each step', (v) => Number.parseInt(v, 10), SMOKE_STEP_TIMEOUT_MS)
    .action(async (o) => {
      const secret = process.env.RENDEZVOUS_SECRET;
      if (!secret) fail('RENDEZVOUS_SECRET is not set (the TOTP secret of the smoke identity)');
      const api = o.api?.length ? o.api : process.env.RENDEZVOUS_API;
      if (!api) fail('--api URL (or RENDEZVOUS_API) is required');
      const relayHttp = o.relayHttp ?? process.env.RENDEZVOUS_RELAY_HTTP;
      if (!relayHttp) fail('--relay-http URL (or RENDEZVOUS_RELAY_HTTP) is required');
      if (!Number.isInteger(o.stepTimeout) || o.stepTimeout <= 0)
        fail('--step-timeout must be a positive number of ms');
      try {
        apiUrlList(api);
        new URL(relayHttp);
      } catch (err) {
        fail(`bad URL: ${(err as Error).message}`);
      }
      const out = process.stdout;
      out.write(`smoke: api ${apiUrlList(api).join(',')} relay-http ${relayHttp} uuid ${o.uuid}\n`);
      try {
        await runSmoke({
          api,
          uuid: o.uuid,
          secret,
          relayHttp,
          stepTimeoutMs: o.stepTimeout,
          onStep: (name, ms) => out.write(`smoke: ok  ${name} (${ms} ms)\n`),
        });
      } catch (err) {
        const message =
          err instanceof SmokeFailure ? err.message : `step "setup" failed: ${(err as Error).message}`;
        process.stderr.write(`smoke: ${message}\n`);
        process.exit(1);
      }
      out.write('smoke: passed\n');
      process.exit(0);
    });
}
