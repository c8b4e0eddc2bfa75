/**
 * The client package as people install it (issue 15): `npm pack` of packages/client, installed
 * from the tarball into an empty folder, then used the four ways the issue names — the installed
 * `rendezvous` command (also as an ssh ProxyCommand), a CommonJS `require()`, an ESM `import`,
 * and a TypeScript consumer with the strict flags — against a real local stack. Packed and
 * installed once for the whole file.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack.js';
import { stop, waitForOutput } from '../support/cli.js';
import {
  CLIENT_DIR,
  CLIENT_NAME,
  installTarball,
  type Packed,
  packClient,
  ROOT,
  treeStats,
} from '../support/client-package.js';
import { startEchoServer } from '../support/net.js';
import { type Sshd, startSshd } from '../support/sshd.js';
import { provision, startStack } from '../support/stack.js';

const run = promisify(execFile);
const VERSION = JSON.parse(readFileSync(join(CLIENT_DIR, 'package.json'), 'utf8')).version as string;

let dir: string;
let packed: Packed;
let app: string;
let bin: string;
let stack: LocalStack;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rendezvous-client-package-'));
  packed = await packClient(dir);
  app = await installTarball(packed.tarball, dir);
  bin = join(app, 'node_modules/.bin/rendezvous');
  stack = await startStack();
  echo = await startEchoServer();
}, 240_000);

afterAll(async () => {
  for (const c of children) await stop(c);
  await echo?.close();
  await stack?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The environment of a user's shell: node on PATH, none of this repository's variables. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const k of ['RENDEZVOUS_API', 'RENDEZVOUS_SECRET', 'RENDEZVOUS_RELAY_HTTP'])
    if (!(k in extra)) delete env[k];
  env.PATH = `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}`;
  return env;
}

/** Runs the installed `rendezvous` (its own shebang, as a shell would) to completion. */
async function rendezvous(
  args: string[],
  extra: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(bin, args, { env: userEnv(extra), cwd: app, timeout: 20_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** Runs `node file` in the app folder (a consumer script) to completion. */
async function consumer(file: string, extra: Record<string, string>): Promise<string> {
  const { stdout } = await run(process.execPath, [file], { cwd: app, env: userEnv(extra), timeout: 30_000 });
  return stdout;
}

/** Starts a hidden server with the installed package's ESM entry; resolves once it parks. */
async function exposeWithEsm(uuid: string, targetPort: number): Promise<void> {
  const id = await provision(stack, { uuid });
  const child = spawn(process.execPath, ['hidden.mjs'], {
    cwd: app,
    env: userEnv({ API: stack.apiUrl, UUID: uuid, SECRET: id.secret, TARGET: String(targetPort) }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  await waitForOutput(child, /^parked$/m, 20_000);
}

describe('the packed tarball, installed into an empty folder', () => {
  it('holds built JavaScript, declarations, package.json and the README (no TypeScript sources)', () => {
    const sources = packed.files.filter((f) => f.endsWith('.ts') && !/\.d\.c?ts$/.test(f));
    expect(sources).toEqual([]);
    expect(packed.files).toEqual(
      expect.arrayContaining([
        'package.json',
        'dist/index.mjs',
        'dist/index.cjs',
        'dist/cli.cjs',
        'dist/types/index.d.ts',
        'dist/types/index.d.cts',
        'dist/THIRD-PARTY-LICENSES.md',
        'LICENSE',
      ]),
    );
    // The client's declarations stop at the client: no store, no registration domain, no SDK.
    expect(packed.files.filter((f) => /store|registration|aws/.test(f))).toEqual([]);
  });

  it('carries the MIT licence of package.json, the same text as the repository root', () => {
    const root = readFileSync(join(ROOT, 'LICENSE'), 'utf8');
    expect(root).toMatch(/^MIT License\n\nCopyright \(c\) 2026 the rendezvous authors\n/);
    expect(JSON.parse(readFileSync(join(CLIENT_DIR, 'package.json'), 'utf8')).license).toBe('MIT');
    expect(readFileSync(join(app, 'node_modules', CLIENT_NAME, 'LICENSE'), 'utf8')).toBe(root);
  });

  it('installs offline as one package (at most 5) under 2 MB, with no install scripts, no tsx, no AWS SDK', () => {
    const stats = treeStats(join(app, 'node_modules'));
    console.log(
      `client package installed: ${stats.packages.length} packages (${stats.packages.join(', ')}), ` +
        `${stats.bytes} bytes; tarball ${packed.size} bytes`,
    );
    expect(stats.packages.length).toBeLessThanOrEqual(5);
    // No dependencies at all (otpauth and commander are bundled): installed with --offline.
    expect(stats.packages).toEqual([`${CLIENT_NAME}@${VERSION}`]);
    expect(stats.bytes).toBeLessThanOrEqual(2_000_000);
    // What the README says it weighs is what it weighs (rounded to the hundredth of a MB; packed, within 3 KB).
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const stated = /about ([\d.]+) MB installed \((\d+) KB packed/.exec(readme);
    expect(stated, 'the README states the installed and packed size').not.toBeNull();
    expect(Math.abs(Number(stated?.[1]) - stats.bytes / 1e6)).toBeLessThanOrEqual(0.005);
    expect(Math.abs(Number(stated?.[2]) - packed.size / 1e3)).toBeLessThanOrEqual(3);
    expect(stats.installScripts).toEqual([]);
    expect(
      stats.packages.filter((p) => /^(tsx|esbuild|@aws-sdk\/|aws-cdk|dynalite|commander)@/.test(p)),
    ).toEqual([]);
  });
});

describe('the installed `rendezvous` command', () => {
  it('is the bundled dist/cli.cjs: --version, --help (expose and connect only), connect --help', async () => {
    expect(realpathSync(bin)).toBe(realpathSync(join(app, 'node_modules', CLIENT_NAME, 'dist/cli.cjs')));
    const version = await rendezvous(['--version']);
    expect(version).toMatchObject({ code: 0, stdout: `${VERSION}\n` });
    expect((await rendezvous(['connect', '--version'])).stdout).toBe(`${VERSION}\n`);
    const help = await rendezvous(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/expose \[options\]/);
    expect(help.stdout).toMatch(/connect \[options\]/);
    expect(help.stdout).not.toMatch(/\bdev\b|provision/);
    const connectHelp = await rendezvous(['connect', '--help']);
    expect(connectHelp.code).toBe(0);
    expect(connectHelp.stdout).toContain('--uuid <uuid>');
    expect(connectHelp.stdout).toContain('--listen');
  });

  it('usage errors are one line with exit 2, never a stack trace; secret errors name RENDEZVOUS_SECRET', async () => {
    const api = { RENDEZVOUS_API: stack.apiUrl };
    const cases: Array<[string[], Record<string, string>, RegExp]> = [
      [[], {}, /a command is required: expose, connect/],
      [['nope'], {}, /unknown command 'nope'/],
      [['connect'], api, /required option '--uuid <uuid>'/],
      [['connect', '--uuid', 'x'], {}, /--api URL \(or RENDEZVOUS_API\) is required/],
      [
        ['connect', '--uuid', 'x', '--api', 'not a url'],
        {},
        /--api \(or RENDEZVOUS_API\): not an http\(s\) URL/,
      ],
      [['connect', '--uuid', 'x', '--listen', '99999'], api, /--listen 99999: not a port number/],
      [['connect', '--uuid', 'x', '--bogus'], api, /unknown option '--bogus'/],
      [
        ['expose', '--uuid', 'x', '--to', '22', '--pool', 'abc'],
        { ...api, RENDEZVOUS_SECRET: 'JBSWY3DPEHPK3PXP' },
        /--pool <n>' argument 'abc' is invalid/,
      ],
      [['expose', '--uuid', 'x', '--to', '22'], api, /RENDEZVOUS_SECRET is not set/],
      [
        ['expose', '--uuid', 'x', '--to', '0'],
        { ...api, RENDEZVOUS_SECRET: 'JBSWY3DPEHPK3PXP' },
        /--to: a port from 1 to 65535/,
      ],
      [
        ['expose', '--uuid', 'x', '--to', '22', '--api', 'ftp://relay'],
        { RENDEZVOUS_SECRET: 'JBSWY3DPEHPK3PXP' },
        /--api \(or RENDEZVOUS_API\): not an http\(s\) URL: ftp:\/\/relay/,
      ],
      [
        ['connect', '--uuid', '', '--api', 'http://127.0.0.1:1'],
        {},
        // Checked by the parser with the API's rule (an empty uuid is one of its misses).
        /option '--uuid <uuid>' argument '' is invalid\. a uuid is 1–128 letters/,
      ],
      [
        ['expose', '--uuid', 'bad uuid', '--to', '22', '--api', 'http://127.0.0.1:1'],
        { RENDEZVOUS_SECRET: 'JBSWY3DPEHPK3PXP' },
        /option '--uuid <uuid>' argument 'bad uuid' is invalid\. a uuid is 1–128 letters/,
      ],
      [
        ['expose', '--uuid', 'x', '--to', '22'],
        { ...api, RENDEZVOUS_SECRET: 'not!base32' },
        /^rendezvous: RENDEZVOUS_SECRET: not a base32 TOTP secret/,
      ],
      [
        ['expose', '--uuid', 'x', '--to', '22', '--protocol', 'gopher'],
        { ...api, RENDEZVOUS_SECRET: 'JBSWY3DPEHPK3PXP' },
        /--protocol <protocol>' argument 'gopher' is invalid/,
      ],
    ];
    for (const [args, env, message] of cases) {
      const r = await rendezvous(args, env);
      const what = `rendezvous ${args.join(' ')}: ${r.stderr}`;
      expect(r.code, what).toBe(2);
      expect(r.stderr, what).toMatch(message);
      expect(r.stderr.trimEnd().split('\n'), what).toHaveLength(1);
      expect(r.stderr, what).not.toMatch(/\n\s+at /);
      expect(r.stdout, what).toBe('');
    }
    // The malformed secret itself is never echoed back.
    const bad = await rendezvous(['expose', '--uuid', 'x', '--to', '22'], {
      ...api,
      RENDEZVOUS_SECRET: 'not!base32',
    });
    expect(bad.stderr).not.toContain('not!base32');
  });

  it('carries ssh as the ProxyCommand, with expose on the hidden side, both the installed command', async () => {
    let sshd: Sshd | undefined;
    try {
      sshd = await startSshd();
      const id = await provision(stack, { uuid: 'pkg-ssh' });
      const agent = spawn(bin, ['expose', '--uuid', 'pkg-ssh', '--to', `127.0.0.1:${sshd.port}`], {
        cwd: app,
        env: userEnv({ RENDEZVOUS_API: stack.apiUrl, RENDEZVOUS_SECRET: id.secret }),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(agent);
      await waitForOutput(agent, /registered/, 20_000, 'stderr');
      // What the README tells a laptop to write: the installed command, not `npx`.
      const { stdout } = await run(
        'ssh',
        [
          ...sshd.sshArgs,
          '-o',
          `ProxyCommand=${bin} connect --uuid pkg-ssh`,
          sshd.destination,
          'echo ssh-through-installed-client-ok',
        ],
        { env: userEnv({ RENDEZVOUS_API: stack.apiUrl }), timeout: 30_000 },
      );
      expect(stdout.trim()).toBe('ssh-through-installed-client-ok');
    } finally {
      await sshd?.close();
    }
  }, 60_000);
});

describe('the library from the installed package', () => {
  beforeAll(() => {
    writeFileSync(
      join(app, 'hidden.mjs'),
      `import { exposeHiddenServer } from '${CLIENT_NAME}';
const server = exposeHiddenServer({
  api: process.env.API,
  uuid: process.env.UUID,
  secret: process.env.SECRET,
  target: { host: '127.0.0.1', port: Number(process.env.TARGET) },
});
server.once('listening', () => console.log('parked'));
server.on('error', (err) => { console.error(err.code, err.message); process.exit(1); });
process.on('SIGTERM', () => server.close(() => process.exit(0)));
`,
    );
    // The same round trip for both module systems: typed option error, then an echo.
    const roundTrip = `
  const bad = await connect({ uuid: 'x' }).catch((err) => err);
  const socket = await connect({ api: process.env.API, uuid: process.env.UUID });
  const chunks = [];
  socket.on('data', (c) => chunks.push(c));
  socket.on('end', () =>
    console.log(JSON.stringify({
      echoed: Buffer.concat(chunks).toString(),
      badIsTyped: bad instanceof RendezvousError,
      badCode: bad.code,
      badMessage: bad.message,
    })),
  );
  socket.end(process.env.PAYLOAD);
`;
    writeFileSync(
      join(app, 'mobile.cjs'),
      `const { connect, RendezvousError } = require('${CLIENT_NAME}');
console.error('resolved', require.resolve('${CLIENT_NAME}'));
(async () => {${roundTrip}})().catch((err) => { console.error(err); process.exit(1); });
`,
    );
    writeFileSync(
      join(app, 'mobile.mjs'),
      `import { connect, RendezvousError } from '${CLIENT_NAME}';
${roundTrip}`,
    );
  });

  it('an ESM hidden server (import) is reached by a CommonJS require() consumer', async () => {
    await exposeWithEsm('pkg-cjs', echo.port);
    const out = JSON.parse(
      await consumer('mobile.cjs', { API: stack.apiUrl, UUID: 'pkg-cjs', PAYLOAD: 'hello from require()' }),
    );
    expect(out).toEqual({
      echoed: 'hello from require()',
      badIsTyped: true,
      badCode: 'INVALID_OPTION',
      badMessage: 'option api: an http(s) URL is required',
    });
  });

  it('an ESM import consumer reaches it too', async () => {
    await exposeWithEsm('pkg-esm', echo.port);
    const out = JSON.parse(
      await consumer('mobile.mjs', { API: stack.apiUrl, UUID: 'pkg-esm', PAYLOAD: 'hello from import' }),
    );
    expect(out).toMatchObject({ echoed: 'hello from import', badIsTyped: true, badCode: 'INVALID_OPTION' });
  });

  it('a missing secret is a typed INVALID_OPTION error, not a TypeError', async () => {
    writeFileSync(
      join(app, 'no-secret.cjs'),
      `const { createHiddenServer, isRendezvousError } = require('${CLIENT_NAME}');
try { createHiddenServer({ api: 'http://127.0.0.1:1', uuid: 'x' }); }
catch (err) { console.log(JSON.stringify({ typed: isRendezvousError(err, 'INVALID_OPTION'), message: err.message })); }
`,
    );
    expect(JSON.parse(await consumer('no-secret.cjs', {}))).toEqual({
      typed: true,
      message: 'option secret: the TOTP secret (base32, or an otpauth:// URI) is required',
    });
  });

  it('isRendezvousError recognises an error from the other module format (dual-package hazard)', async () => {
    writeFileSync(
      join(app, 'mixed.mjs'),
      `import { createRequire } from 'node:module';
import { isRendezvousError, RendezvousError } from '${CLIENT_NAME}';
const cjs = createRequire(import.meta.url)('${CLIENT_NAME}');
let err;
try { cjs.createHiddenServer({ api: 'http://127.0.0.1:1', uuid: 'x' }); } catch (e) { err = e; }
console.log(JSON.stringify({ sameClass: err instanceof RendezvousError, recognised: isRendezvousError(err, 'INVALID_OPTION') }));
`,
    );
    expect(JSON.parse(await consumer('mixed.mjs', {}))).toEqual({ sameClass: false, recognised: true });
  });
});

describe('a TypeScript consumer', () => {
  it('compiles with strict + exactOptionalPropertyTypes, no skipLibCheck, ESM and CommonJS, without the SDK', async () => {
    const ts = join(dir, 'ts-consumer');
    const { mkdirSync, symlinkSync } = await import('node:fs');
    mkdirSync(ts, { recursive: true });
    symlinkSync(join(app, 'node_modules'), join(ts, 'node_modules'));
    writeFileSync(join(ts, 'package.json'), '{ "name": "ts-consumer", "private": true, "type": "module" }\n');
    writeFileSync(
      join(ts, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          skipLibCheck: false,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          lib: ['es2023'],
          noEmit: true,
          // @types/node, as any Node application has it (the repository's copy).
          types: ['node'],
          typeRoots: [join(ROOT, 'node_modules/@types')],
        },
        files: ['consumer.mts', 'consumer.cts'],
      }),
    );
    writeFileSync(
      join(ts, 'consumer.mts'),
      `import type { Socket } from 'node:net';
import {
  type ConnectOptions,
  connect,
  createHiddenServer,
  type ErrorCode,
  exposeHiddenServer,
  type HiddenServerOptions,
  isRendezvousError,
  RendezvousError,
  rendezvousUrl,
} from '${CLIENT_NAME}';

const base: ConnectOptions = { api: 'http://127.0.0.1:8080', uuid: 'my-laptop' };
const bounded: ConnectOptions = { ...base, timeoutMs: 5_000, signal: AbortSignal.timeout(10_000) };
export async function reach(): Promise<Socket | ErrorCode> {
  try {
    return await connect(bounded);
  } catch (err) {
    if (isRendezvousError(err)) return err.code;
    throw err;
  }
}
const options: HiddenServerOptions = { api: 'http://127.0.0.1:8080', uuid: 'u', secret: 'JBSWY3DPEHPK3PXP', pool: 2 };
const hidden = createHiddenServer(options, (socket: Socket) => socket.pipe(socket));
hidden.on('error', (err: RendezvousError) => console.log(err.code, err.retryAfter, err.permanent));
hidden.listen(() => hidden.close());
export const agent = () =>
  exposeHiddenServer({ ...options, target: { host: '127.0.0.1', port: 22 } });
export const url: string = rendezvousUrl('https://relay.example.com', 'my-web', '/status');
// The types are real, not any: a missing secret and an undefined optional are errors.
// @ts-expect-error secret is required
createHiddenServer({ api: 'http://127.0.0.1:8080', uuid: 'u' });
// @ts-expect-error exactOptionalPropertyTypes: timeoutMs may be left out, not set to undefined
export const loose: ConnectOptions = { ...base, timeoutMs: undefined };
`,
    );
    writeFileSync(
      join(ts, 'consumer.cts'),
      `import rendezvous = require('${CLIENT_NAME}');
import type { Socket } from 'node:net';
const opts: rendezvous.ConnectOptions = { api: 'http://127.0.0.1:8080', uuid: 'my-laptop' };
export const pending: Promise<Socket> = rendezvous.connect(opts);
export const isTyped = (err: unknown): boolean => err instanceof rendezvous.RendezvousError;
`,
    );
    const tsc = join(ROOT, 'node_modules/.bin/tsc');
    let listed: string;
    try {
      ({ stdout: listed } = await run(tsc, ['-p', 'tsconfig.json', '--listFiles'], {
        cwd: ts,
        timeout: 60_000,
      }));
    } catch (err) {
      const e = err as { stdout?: string };
      throw new Error(`tsc failed:\n${e.stdout}`);
    }
    const ours = listed.split('\n').filter((f) => f.includes(CLIENT_NAME));
    expect(ours).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/dist\/types\/index\.d\.ts$/),
        expect.stringMatching(/dist\/types\/index\.d\.cts$/),
      ]),
    );
    expect(ours.filter((f) => !/\.d\.c?ts$/.test(f))).toEqual([]);
    expect(listed).not.toMatch(/aws-sdk|@smithy|core\/store/);
  }, 90_000);
});
