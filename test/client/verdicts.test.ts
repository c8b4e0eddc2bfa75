/**
 * An agent whose credentials are refused reaches a verdict quickly, naming only what the server
 * can prove; it authenticates with the one-time proof and falls back to short codes against a
 * server that does not know proofs. The "proof server" here is a small real HTTP server on
 * 127.0.0.1 that answers as our registration API does once it verifies proofs (`401
 * authentication failed` for a wrong proof, `403 identity disabled` and `400 code length not
 * accepted for this identity` for a right one, `code used already` for a replay); the last
 * describe runs against the local stack itself (it needs the server side of proofs, branch
 * `codes`).
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isProof, newTotpSecret, proofForStep, TOTP_DEFAULTS, timeStep } from '../../core/totp.js';
import { createHiddenServer, isRendezvousError } from '../../index.js';
import type { LocalStack } from '../../local/stack.js';
import { exitWithin, spawnCli } from '../support/cli.js';
import { provision, startStack } from '../support/stack.js';

const SECRET = newTotpSecret();
const params = { secret: SECRET, ...TOTP_DEFAULTS };

interface ProofServer {
  url: string;
  seen: string[];
  close(): void;
}

/**
 * A registration API that verifies proofs (±1 step) for the uuids it knows: `answer` may
 * override the answer to a right proof (disabled, replay …).
 */
async function proofServer(
  relayPort: number,
  known: Record<
    string,
    (n: number) => { status: number; diagnostic: string; permanent?: boolean } | undefined
  >,
): Promise<ProofServer> {
  const seen: string[] = [];
  const count = new Map<string, number>();
  const server: HttpServer = createHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const uuid = url.searchParams.get('uuid') ?? '';
    const response = url.searchParams.get('response') ?? '';
    seen.push(response);
    const fail = (status: number, diagnostic: string, permanent = status !== 429) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { permanent, diagnostic } }));
    };
    if (!/^[0-9]{6,10}$/.test(response) && !isProof(response))
      return fail(400, 'malformed parameter: response');
    const now = timeStep(params, Date.now());
    const right =
      isProof(response) && [now - 1, now, now + 1].some((s) => proofForStep(params, uuid, s) === response);
    const rule = known[uuid];
    if (!rule || !right) return fail(401, 'authentication failed');
    const n = (count.get(uuid) ?? 0) + 1;
    count.set(uuid, n);
    const override = rule(n);
    if (override) return fail(override.status, override.diagnostic, override.permanent);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ result: { host: '127.0.0.1', port: relayPort, cookie: 'Rabc' } }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => server.close(),
  };
}

let holder: Server;
let api: ProofServer;
beforeAll(async () => {
  // Stands in for the relay: parks are held open.
  holder = createServer((s) => s.on('error', () => undefined));
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
  api = await proofServer((holder.address() as AddressInfo).port, {
    good: () => undefined,
    disabled: () => ({ status: 403, diagnostic: 'identity disabled' }),
    length: () => ({ status: 400, diagnostic: 'code length not accepted for this identity' }),
    replayed: (n) => (n === 1 ? { status: 401, diagnostic: 'code used already' } : undefined),
    // What our server answers a right proof whose step was claimed already (not permanent).
    'proof-replayed': (n) =>
      n === 1 ? { status: 401, diagnostic: 'proof already used for this step', permanent: false } : undefined,
  });
});
afterAll(() => {
  api?.close();
  holder?.close();
});

/** Starts an agent for `uuid` and resolves with its first error, or undefined once it registered. */
function firstOutcome(uuid: string, secret = SECRET): Promise<Error | undefined> {
  const agent = createHiddenServer({ api: api.url, uuid, secret, backoff: { minMs: 20, maxMs: 200 } });
  return new Promise<Error | undefined>((resolve, reject) => {
    // The verdict comes from the answers, not from waiting out later steps (30 s each).
    const t = setTimeout(() => reject(new Error('no verdict within 20 s')), 20_000);
    agent.once('error', (e) => resolve(e));
    agent.once('registered', () => resolve(undefined));
    agent.on('error', () => clearTimeout(t));
    agent.on('registered', () => clearTimeout(t));
    agent.listen();
  }).finally(() => agent.close());
}

describe('the one-time proof', () => {
  it('is what the agent sends first, and registers', async () => {
    const before = api.seen.length;
    expect(await firstOutcome('good')).toBeUndefined();
    expect(api.seen.slice(before).every(isProof)).toBe(true);
  });

  it('"code used already" is not a verdict: the next step\'s proof registers', async () => {
    expect(await firstOutcome('replayed')).toBeUndefined();
  });

  it('"proof already used for this step" (permanent: false) is no verdict nor a server without proofs', async () => {
    const before = api.seen.length;
    expect(await firstOutcome('proof-replayed')).toBeUndefined();
    expect(api.seen.slice(before).every(isProof)).toBe(true);
  });
});

describe('verdicts (library): a typed error, at once, naming what the server can prove', () => {
  it('a wrong secret: AUTH_FAILED "wrong secret or unknown uuid", without waiting for later steps', async () => {
    const before = api.seen.length;
    const err = await firstOutcome('good', newTotpSecret());
    expect(isRendezvousError(err, 'AUTH_FAILED')).toBe(true);
    expect(err?.message).toMatch(/wrong secret or unknown uuid/);
    // Two proofs (this step's and the next's) and one short code (which an older relay that
    // refuses proofs like a wrong secret would accept), no waiting for later steps.
    expect(api.seen.length - before).toBeLessThanOrEqual(3);
  });

  it('an unknown uuid: the same verdict (indistinguishable by design)', async () => {
    const err = await firstOutcome('nobody');
    expect(isRendezvousError(err, 'AUTH_FAILED')).toBe(true);
    expect(err?.message).toMatch(/wrong secret or unknown uuid/);
  });

  it('a disabled identity: IDENTITY_DISABLED, the secret not blamed', async () => {
    const err = await firstOutcome('disabled');
    expect(isRendezvousError(err, 'IDENTITY_DISABLED')).toBe(true);
    expect(err?.message).toMatch(/identity disabled/);
    expect(err?.message).not.toMatch(/secret/i);
  });

  it('a code length the identity does not accept: CODE_LENGTH_REFUSED', async () => {
    const err = await firstOutcome('length');
    expect(isRendezvousError(err, 'CODE_LENGTH_REFUSED')).toBe(true);
    expect(err?.message).toMatch(/code length not accepted for this identity/);
  });
});

describe('verdicts (CLI): expose exits non-zero with one line', () => {
  const run = async (uuid: string, secret: string) => {
    const child = spawnCli(['expose', '--uuid', uuid, '--to', '1', '--api', api.url, '--probe-every', '0'], {
      RENDEZVOUS_SECRET: secret,
    });
    let err = '';
    child.stderr?.on('data', (c) => {
      err += c;
    });
    const code = await exitWithin(child, 30_000);
    return { code, err };
  };

  it('wrong secret', async () => {
    const { code, err } = await run('good', newTotpSecret());
    expect(code).not.toBe(0);
    expect(err).toMatch(/wrong secret or unknown uuid/);
    expect(err).not.toMatch(/used already/);
  });

  it('disabled identity', async () => {
    const { code, err } = await run('disabled', SECRET);
    expect(code).not.toBe(0);
    expect(err).toMatch(/identity disabled/);
    expect(err).not.toMatch(/RENDEZVOUS_SECRET is wrong|wrong secret/);
  });
});

describe('against the local stack (needs the server side of proofs: branch codes)', () => {
  let stack: LocalStack;
  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(async () => {
    await stack?.close();
  });

  const outcome = (opts: Parameters<typeof createHiddenServer>[0]) => {
    const agent = createHiddenServer(opts);
    return new Promise<Error | undefined>((resolve, reject) => {
      setTimeout(() => reject(new Error('no verdict within 20 s')), 20_000).unref();
      agent.once('error', resolve);
      agent.once('registered', () => resolve(undefined));
      agent.listen();
    }).finally(() => agent.close());
  };

  it('a wrong secret is concluded within 15 s on both protocols', async () => {
    const id = await provision(stack, { uuid: 'verdict-wrong' });
    for (const protocol of ['generic', 'http'] as const) {
      const err = await outcome({
        protocol,
        api: stack.apiUrl,
        relay: `http://127.0.0.1:${stack.httpPort}`,
        uuid: id.uuid,
        secret: newTotpSecret(),
      });
      expect(isRendezvousError(err, 'AUTH_FAILED'), String(err)).toBe(true);
      expect(err?.message).toMatch(/wrong secret or unknown uuid/);
    }
  });

  it('a disabled identity: IDENTITY_DISABLED on both protocols, the secret not blamed', async () => {
    const id = await provision(stack, { uuid: 'verdict-disabled' });
    await stack.store.setDisabled(id.uuid, true);
    for (const protocol of ['generic', 'http'] as const) {
      const err = await outcome({
        protocol,
        api: stack.apiUrl,
        relay: `http://127.0.0.1:${stack.httpPort}`,
        uuid: id.uuid,
        secret: id.secret,
      });
      expect(isRendezvousError(err, 'IDENTITY_DISABLED'), `${protocol}: ${String(err)}`).toBe(true);
      expect(err?.message).not.toMatch(/secret/i);
    }
  });

  it('the right secret registers with a proof', async () => {
    const id = await provision(stack, { uuid: 'verdict-right' });
    expect(
      await outcome({ api: stack.apiUrl, uuid: id.uuid, secret: id.secret, auth: 'proof' } as never),
    ).toBe(undefined);
  });
});
