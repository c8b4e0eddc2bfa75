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
import type { Command } from 'commander';
import { type ApiUrls, apiUrlList, lookupWithApi, registerWithApi } from '../client/api.js';
import { totpParamsFrom } from '../client/hidden-server.js';
import { isRendezvousError, RendezvousError } from '../core/errors.js';
import { COOKIE_HEADER, headerValue } from '../core/http-head.js';
import { printable } from '../core/printable.js';
import { connectTcp } from '../core/socket-reader.js';
import { splice } from '../core/splice.js';
import { codeForStep, type TotpParams, timeStep } from '../core/totp.js';
import type { RendezvousTriple } from '../core/triple.js';
import { connectPark, isOwnRequest, NONCE_HEADER } from './smoke-http.js';
import { ParkRefused, pairOnce, parkGeneric, within } from './smoke-pairing.js';

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

/**
 * Pairings tried before the run fails when another client keeps taking the parked connection
 * (anyone who knows the uuid can look it up and dial it, as a mobile client would).
 */
export const SMOKE_PAIR_ATTEMPTS = 3;

/** The failure reason when every pairing was taken by another client. */
export const STOLEN_REASON = 'another client took the parked connection';

/** What a smoke run needs. */
export interface SmokeOptions {
  api: ApiUrls;
  uuid: string;
  /** Base32 secret or otpauth URI (from the environment, never argv). */
  secret: string;
  /** The relay's HTTP-specific endpoint, `http://host:port` or `https://host`. */
  relayHttp: string;
  stepTimeoutMs?: number;
  /** Each finished step, with its duration; a returned promise is awaited before the next step. */
  onStep?: (step: SmokeStep, ms: number) => unknown;
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

/** Reads everything until the far side ends. */
function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
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
      await opts.onStep?.(name, Date.now() - started);
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
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'x-smoke-sha256': sha(body),
        [NONCE_HEADER]: String(req.headers[NONCE_HEADER] ?? ''),
      });
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
    let park = parkGeneric(triple, cleanup);
    park.paired.catch(() => undefined);
    await step('park (generic)', () => within(park.ready, ms, 'park'));
    const mobileTriple: RendezvousTriple = await step('lookup (generic)', () =>
      within(lookupWithApi(api, opts.uuid), ms * api.length, 'answer'),
    );
    const { mobile, nonce } = await step('pair (generic)', async () => {
      for (let attempt = 1; ; attempt++) {
        const got = await pairOnce(park, mobileTriple, target(echo), ms, cleanup).catch((err) => {
          if (err instanceof ParkRefused)
            throw new SmokeFailure('park (generic)', `the relay refused the park: ${reasonOf(err.refusal)}`);
          throw err;
        });
        if (got !== 'stolen') return got;
        if (attempt >= SMOKE_PAIR_ATTEMPTS) {
          throw new Error(
            `${STOLEN_REASON} ${attempt} times in a row (someone else is connecting to uuid ${opts.uuid}; keep the smoke's identity for the smoke alone)`,
          );
        }
        // Park again with the same registration and try once more.
        park = parkGeneric(triple, cleanup);
        park.paired.catch(() => undefined);
        await within(park.ready, ms, 'park');
      }
    });
    await step('bytes (generic)', async () => {
      const payload = randomBytes(SMOKE_PAYLOAD_BYTES);
      const back = readAll(mobile);
      mobile.end(payload);
      const got = await within(back, ms, 'echo');
      if (!got.subarray(0, nonce.length).equals(nonce))
        throw new Error("the echo does not start with this run's nonce: another client's bytes");
      if (sha(got.subarray(nonce.length)) !== sha(payload))
        throw new Error(`sent ${payload.length} bytes, got ${got.length - nonce.length} different ones back`);
    });

    // --- HTTP-specific protocol ---
    let httpCookie: string | undefined;
    const parkedHttp = await step('park (http)', async () => {
      for (;;) {
        const { code, step: s } = await codes.next();
        const { socket, head } = await connectPark(relay, { uuid: opts.uuid, response: code }, ms, cleanup);
        if (head.status === 200) {
          codes.accepted(s);
          // A later park (after a stolen request) names this cookie instead of a fresh code.
          httpCookie = headerValue(head, COOKIE_HEADER);
          return socket;
        }
        socket.destroy();
        if (head.status === 401 && !codes.refusedNow(s)) continue;
        if (head.status === 401) throw new RendezvousError('AUTH_FAILED', 'refused');
        throw new Error(`the relay answered CONNECT with ${head.status}`);
      }
    });
    await step('request (http)', async () => {
      const nonce = randomBytes(16).toString('hex');
      let thefts = 0;
      // The parked side: a request carrying this run's nonce goes to the HTTP target; any other
      // came from another client, which took the park: park again (with the cookie) and wait.
      const serve = async (socket: Socket): Promise<never> => {
        for (;;) {
          if (await isOwnRequest(socket, nonce, ms)) {
            splice(socket, await connectTcp('127.0.0.1', target(web), { timeoutMs: ms }));
            return new Promise<never>(() => {});
          }
          socket.destroy();
          if (++thefts >= SMOKE_PAIR_ATTEMPTS)
            throw new Error(
              `${STOLEN_REASON} ${thefts} times in a row (someone else is connecting to uuid ${opts.uuid})`,
            );
          const credential = httpCookie ? { cookie: httpCookie } : { response: (await codes.next()).code };
          const again = await connectPark(relay, { uuid: opts.uuid, ...credential }, ms, cleanup);
          if (again.head.status !== 200)
            throw new Error(`the relay answered CONNECT with ${again.head.status}`);
          socket = again.socket;
        }
      };
      let url = new URL(relay);
      url.pathname = '/smoke';
      url.searchParams.set('rendezvous', opts.uuid);
      const send = async (): Promise<void> => {
        for (let attempt = 1; ; attempt++) {
          const payload = randomBytes(SMOKE_PAYLOAD_BYTES);
          const post = (to: URL) =>
            fetch(to, {
              method: 'POST',
              body: payload,
              headers: { [NONCE_HEADER]: nonce },
              signal: AbortSignal.timeout(ms),
            });
          let res = await post(url);
          if (res.status === 403 && url.searchParams.has('rendezvous')) {
            // A relay routing by host (RELAY_HTTP_DOMAIN) serves no hidden server on its own name:
            // ask <uuid>.<its name> from now on (the refusal came before any pairing).
            await res.arrayBuffer();
            url = new URL(relay);
            url.hostname = `${opts.uuid.toLowerCase()}.${url.hostname}`;
            url.pathname = '/smoke';
            res = await post(url);
          }
          const got = Buffer.from(await res.arrayBuffer());
          // Not paired with this run's park (another client had it): try again while parks remain.
          if (res.status !== 200 && thefts > 0 && attempt < SMOKE_PAIR_ATTEMPTS) continue;
          if (res.status !== 200)
            throw new Error(`HTTP ${res.status}: ${got.toString('utf8').slice(0, 200)}`);
          if (res.headers.get(NONCE_HEADER) !== nonce)
            throw new Error("the answer does not carry this run's nonce: another client's answer");
          if (sha(got) !== sha(payload) || res.headers.get('x-smoke-sha256') !== sha(payload))
            throw new Error(`sent ${payload.length} bytes, got ${got.length} different ones back`);
          return;
        }
      };
      await Promise.race([send(), serve(parkedHttp)]);
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
      out.write(
        `${printable(`smoke: api ${apiUrlList(api).join(',')} relay-http ${relayHttp} uuid ${o.uuid}`)}\n`,
      );
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
        process.stderr.write(`smoke: ${printable(message)}\n`);
        process.exit(1);
      }
      out.write('smoke: passed\n');
      process.exit(0);
    });
}
