/**
 * The integration suites run on any DynamoDB endpoint named by RENDEZVOUS_TEST_DYNAMODB_ENDPOINT
 * (issue 27, item 11). CI proves the switch here: a dynalite started as a process of its own
 * (as `npx dynalite --port N` starts it), then a representative integration file — the whole
 * local stack, both sides of a rendezvous over real sockets — run by vitest with the variable
 * set. The tables it made on that separate store, holding the identities it provisioned, show
 * it ran there and not on an embedded store.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DynamoDBClient, ListTablesCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { externalEndpoint, TEST_ENDPOINT_VAR } from '../support/external-store.js';
import { freePort } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const require = createRequire(import.meta.url);
/** The integration file run on the separate store. */
const REPRESENTATIVE = 'test/local/generic-protocol.test.ts';

let store: ChildProcess;
let endpoint: string;
let client: DynamoDBClient;

beforeAll(async () => {
  const port = await freePort();
  endpoint = `http://127.0.0.1:${port}`;
  store = spawn(process.execPath, [require.resolve('dynalite/cli.js'), '--port', String(port)], {
    stdio: 'ignore',
  });
  client = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
  await waitFor(
    () =>
      client.send(new ListTablesCommand({})).then(
        () => true,
        () => false,
      ),
    30_000,
    'the separate dynalite answering',
  );
}, 60_000);

afterAll(() => {
  client?.destroy();
  store?.kill('SIGTERM');
});

/** Runs vitest on `files` in a child process with `env` added; resolves with its exit code and output. */
function vitest(files: string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  // The child is a vitest of its own: none of this run's worker variables.
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^VITEST|^TINYPOOL/.test(k)));
  const child = spawn(
    process.execPath,
    [join(ROOT, 'node_modules', 'vitest', 'vitest.mjs'), 'run', ...files],
    {
      cwd: ROOT,
      env: { ...base, ...env, CI: '', NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout?.on('data', (c: Buffer) => {
    out += c.toString();
  });
  child.stderr?.on('data', (c: Buffer) => {
    out += c.toString();
  });
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, out })));
}

describe(`${TEST_ENDPOINT_VAR}: the suites on a store started as a separate process`, () => {
  it(`${REPRESENTATIVE} passes on it, and its tables and identities are there`, async () => {
    const run = await vitest([REPRESENTATIVE], {
      [TEST_ENDPOINT_VAR]: endpoint,
      RENDEZVOUS_TEST_KEEP_TABLES: '1',
    });
    expect(run.out).toMatch(/Test Files\s+\S*1 passed/);
    expect(run.code).toBe(0);
    const tables = (await client.send(new ListTablesCommand({}))).TableNames ?? [];
    const made = tables.filter((t) => t.startsWith('rendezvous-stack-'));
    expect(made.length).toBeGreaterThan(0);
    const identities = (
      await Promise.all(
        made.map((TableName) =>
          client.send(
            new ScanCommand({
              TableName,
              FilterExpression: 'sk = :sk',
              ExpressionAttributeValues: { ':sk': { S: 'IDENTITY' } },
            }),
          ),
        ),
      )
    ).flatMap((page) => page.Items ?? []);
    expect(identities.length).toBeGreaterThan(0);
  }, 300_000);

  it('refuses a value that is not an endpoint, naming the variable', () => {
    expect(() => externalEndpoint({ [TEST_ENDPOINT_VAR]: 'localhost:4566' })).toThrow(
      /RENDEZVOUS_TEST_DYNAMODB_ENDPOINT must be http\(s\):\/\/host:port/,
    );
    expect(externalEndpoint({ [TEST_ENDPOINT_VAR]: 'http://127.0.0.1:4566/' })).toBe('http://127.0.0.1:4566');
    expect(externalEndpoint({})).toBeUndefined();
  });
});
