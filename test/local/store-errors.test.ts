/**
 * Errors name their cause (issue 17): a CLI command that cannot use the store prints one line
 * saying which setting is missing or what the endpoint answered — not "store unavailable, try
 * again later" for every configuration mistake — exits 1, shows no stack trace and no secret.
 * Each case runs the real `rendezvous` command against a real misconfiguration: dynalite without
 * the table, a closed port, a web server that is not DynamoDB, no region, no credentials.
 */
import { createServer, type Server } from 'node:http';
import { type AddressInfo, createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStoreServer } from '../../local/store-server.js';
import { runCli } from '../support/cli.js';

const SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';
const AWS_SECRET = 'wJalrXUtnFEMI-do-not-print-K7MDENG';

/** No AWS settings from the machine running the tests: each case sets exactly what it names. */
const CLEAN = {
  AWS_REGION: '',
  AWS_DEFAULT_REGION: '',
  AWS_PROFILE: '',
  AWS_ACCESS_KEY_ID: '',
  AWS_SECRET_ACCESS_KEY: '',
  AWS_SESSION_TOKEN: '',
  AWS_ENDPOINT_URL_DYNAMODB: '',
  AWS_ENDPOINT_URL: '',
  AWS_CONFIG_FILE: '/nonexistent/aws-config',
  AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/aws-credentials',
  AWS_EC2_METADATA_DISABLED: 'true',
  RENDEZVOUS_TABLE: '',
  RENDEZVOUS_SECRET: SECRET,
};

let store: Awaited<ReturnType<typeof startStoreServer>>;
let web: Server;
let webUrl: string;
let fakeAws: Server;
let fakeAwsUrl: string;
let silent: TcpServer;
let silentUrl: string;

async function listen(server: Server | TcpServer): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  // dynalite with no table created.
  store = await startStoreServer({ port: 0 });
  // Another service on the port the endpoint names.
  web = createServer((_req, res) => {
    res.writeHead(404, { 'content-type': 'text/html' });
    res.end('<html><body>Not Found</body></html>');
  });
  webUrl = await listen(web);
  // An endpoint that speaks DynamoDB's error format and refuses the credentials, as AWS does.
  fakeAws = createServer((_req, res) => {
    res.writeHead(400, { 'content-type': 'application/x-amz-json-1.0' });
    res.end(
      JSON.stringify({
        __type: 'com.amazonaws.dynamodb.v20120810#UnrecognizedClientException',
        message: 'The security token included in the request is invalid.',
      }),
    );
  });
  fakeAwsUrl = await listen(fakeAws);
  // Accepts connections and never answers (a frozen store, a firewall that swallows).
  silent = createTcpServer(() => undefined);
  silentUrl = await listen(silent);
});

afterAll(async () => {
  await store.close();
  web.close();
  fakeAws.close();
  silent.close();
});

/** Runs `rendezvous …args` in the clean environment plus `env`, and checks the one-line failure. */
async function oneLine(args: string[], env: Record<string, string>, input = ''): Promise<string> {
  const r = await runCli(args, { ...CLEAN, ...env }, input);
  const what = `rendezvous ${args.join(' ')}: ${r.stderr}`;
  expect(r.code, what).toBe(1);
  expect(r.stderr.trimEnd().split('\n'), what).toHaveLength(1);
  expect(r.stderr, what).not.toMatch(/\n\s+at |Error:/);
  expect(r.stderr, what).not.toContain(SECRET);
  expect(r.stderr, what).not.toContain(AWS_SECRET);
  expect(r.stderr, what).not.toContain('try again later');
  return r.stderr;
}

const DUMP = JSON.stringify({
  'imp-1': JSON.stringify({
    uuid: 'imp-1',
    authParams: { algorithm: 'sha1', length: 40, step: 30, base32: SECRET, protocol: 'totp' },
  }),
});

describe('a CLI that cannot use the store says why, in one line', () => {
  it('a table that is not there: named, with the setting and the endpoint, by provision, import, compat and admin', async () => {
    const env = {
      AWS_REGION: 'local',
      AWS_ENDPOINT_URL_DYNAMODB: store.endpoint,
      RENDEZVOUS_TABLE: 'no-such-table',
    };
    const line = `store: table "no-such-table" (RENDEZVOUS_TABLE) not found at ${store.endpoint} (AWS_ENDPOINT_URL_DYNAMODB)`;
    const [provision, secretEnv, imported, compat, admin] = await Promise.all([
      oneLine(['provision', '--uuid', 'u1'], env),
      oneLine(['provision', '--uuid', 'u1', '--secret-env'], env),
      oneLine(['import'], env, DUMP),
      oneLine(['compat', 'u1'], env),
      oneLine(['admin', '--port', '0'], env),
    ]);
    expect(provision).toBe(`rendezvous: ${line}\n`);
    expect(secretEnv).toBe(`rendezvous: ${line}\n`);
    expect(imported).toBe(`rendezvous: ${line}\n`);
    expect(compat).toBe(`rendezvous: ${line}\n`);
    expect(admin).toBe(`rendezvous: cannot start: ${line}\n`);
    // --table names itself when it is what chose the table.
    expect(await oneLine(['provision', '--table', 'other-table'], env)).toBe(
      `rendezvous: store: table "other-table" (--table) not found at ${store.endpoint} (AWS_ENDPOINT_URL_DYNAMODB)\n`,
    );
  }, 90_000);

  it('an endpoint that refuses connections, one that never answers, another web server, and a value that is not a URL', async () => {
    const [refused, frozen, notDynamo, notUrl] = await Promise.all([
      oneLine(['provision'], { AWS_REGION: 'local', AWS_ENDPOINT_URL_DYNAMODB: 'http://127.0.0.1:1' }),
      oneLine(['provision'], { AWS_REGION: 'local', AWS_ENDPOINT_URL_DYNAMODB: silentUrl }),
      oneLine(['provision'], { AWS_REGION: 'local', AWS_ENDPOINT_URL_DYNAMODB: webUrl }),
      oneLine(['provision'], { AWS_REGION: 'local', AWS_ENDPOINT_URL_DYNAMODB: 'localhost:8000' }),
    ]);
    expect(refused).toBe(
      'rendezvous: store: cannot connect to http://127.0.0.1:1 (AWS_ENDPOINT_URL_DYNAMODB): ECONNREFUSED\n',
    );
    expect(frozen).toBe(
      `rendezvous: store: no answer from ${silentUrl} (AWS_ENDPOINT_URL_DYNAMODB) in time: TimeoutError\n`,
    );
    expect(notDynamo).toBe(
      `rendezvous: store: ${webUrl} (AWS_ENDPOINT_URL_DYNAMODB) answered HTTP 404, not as DynamoDB does (wrong endpoint?)\n`,
    );
    expect(notUrl).toBe(
      'rendezvous: store: AWS_ENDPOINT_URL_DYNAMODB is not an http:// or https:// URL: "localhost:8000"\n',
    );
  }, 60_000);

  it('no region, no credentials, refused credentials: the missing setting is named, the secret key never shown', async () => {
    const [noRegion, noCreds, refusedCreds] = await Promise.all([
      oneLine(['provision'], {}),
      oneLine(['provision'], { AWS_REGION: 'eu-west-1' }),
      oneLine(['provision'], {
        AWS_REGION: 'eu-west-1',
        AWS_ENDPOINT_URL_DYNAMODB: fakeAwsUrl,
        AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
        AWS_SECRET_ACCESS_KEY: AWS_SECRET,
      }),
    ]);
    expect(noRegion).toBe(
      'rendezvous: store: no region set (AWS_REGION), and no endpoint (AWS_ENDPOINT_URL_DYNAMODB) for a local store\n',
    );
    expect(noCreds).toBe(
      'rendezvous: store: no AWS credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) for DynamoDB in eu-west-1 (AWS_REGION)\n',
    );
    expect(refusedCreds).toBe(
      `rendezvous: store: ${fakeAwsUrl} (AWS_ENDPOINT_URL_DYNAMODB) refused the credentials: UnrecognizedClientException\n`,
    );
  }, 60_000);
});
