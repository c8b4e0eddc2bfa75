/**
 * `npm run test:localstack [-- files…]`: the integration suites on LocalStack (opt-in; issue 27,
 * item 11). Starts LocalStack with testcontainers' LocalStack module, creates the state table in
 * it from the CDK template's own definition (the table stack, synthesised offline), runs the
 * registration stack (API handlers and a relay) on that table once — provision, register, look
 * up — and then the suites with RENDEZVOUS_TEST_DYNAMODB_ENDPOINT pointing at LocalStack.
 *
 * Where no LocalStack image can be started (no Docker engine, or no registry to pull it from, as
 * on the build machines) it says it DID NOT RUN and exits 3: never a silent pass.
 *
 *   LOCALSTACK_IMAGE        the image (default below; a tag you have pulled)
 *   LOCALSTACK_AUTH_TOKEN   passed to the container when set (images that need one)
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  CreateTableCommand,
  type CreateTableCommandInput,
  DynamoDBClient,
  UpdateTimeToLiveCommand,
  waitUntilTableExists,
} from '@aws-sdk/client-dynamodb';
import { LocalstackContainer, type StartedLocalStackContainer } from '@testcontainers/localstack';
import { Template } from 'aws-cdk-lib/assertions';
import { startLocalStack } from '../../local/stack.js';
import { synthApp } from '../infra/cdk-app.js';
import { TEST_ENDPOINT_VAR } from '../support/external-store.js';

/** The LocalStack image, pinned (LocalStack's images change what they need between releases). */
export const LOCALSTACK_IMAGE = 'localstack/localstack:4.0.3';

/** Exit code when nothing ran: neither a pass nor a test failure. */
export const DID_NOT_RUN_EXIT = 3;

/** The suites run by default: those that take their store from test/support (store.ts, stack.ts). */
const DEFAULT_FILES = ['test/local', 'test/functions', 'test/client', 'test/compat'];

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const REGION = 'us-east-1';

const say = (line: string) => process.stdout.write(`localstack: ${line}\n`);

/** The state table's CreateTable input, read from the synthesised table stack. */
export function tableFromTemplate(): { create: CreateTableCommandInput; ttlAttribute?: string } {
  const app = synthApp({ regions: REGION });
  const template = Template.fromStack(app.table).toJSON() as {
    Resources: Record<string, { Type: string; Properties: Record<string, unknown> }>;
  };
  const table = Object.values(template.Resources).find((r) => r.Type === 'AWS::DynamoDB::GlobalTable');
  if (!table) throw new Error('the table stack has no AWS::DynamoDB::GlobalTable');
  const p = table.Properties as {
    TableName: string;
    KeySchema: CreateTableCommandInput['KeySchema'];
    AttributeDefinitions: CreateTableCommandInput['AttributeDefinitions'];
    BillingMode?: string;
    TimeToLiveSpecification?: { AttributeName?: string; Enabled?: boolean };
  };
  return {
    create: {
      TableName: p.TableName,
      KeySchema: p.KeySchema,
      AttributeDefinitions: p.AttributeDefinitions,
      BillingMode: (p.BillingMode as CreateTableCommandInput['BillingMode']) ?? 'PAY_PER_REQUEST',
    },
    ttlAttribute: p.TimeToLiveSpecification?.Enabled ? p.TimeToLiveSpecification.AttributeName : undefined,
  };
}

/** Starts LocalStack, or says why it could not (undefined). */
async function startLocalStackContainer(image: string): Promise<StartedLocalStackContainer | undefined> {
  try {
    const token = process.env.LOCALSTACK_AUTH_TOKEN;
    return await new LocalstackContainer(image)
      .withEnvironment({ SERVICES: 'dynamodb', ...(token ? { LOCALSTACK_AUTH_TOKEN: token } : {}) })
      .withStartupTimeout(180_000)
      .start();
  } catch (err) {
    const reason = (err instanceof Error ? err.message : String(err)).split('\n')[0];
    say(`DID NOT RUN: no LocalStack container could be started from ${image}: ${reason}`);
    say(`Nothing was tested against LocalStack. Where a registry is reachable: docker pull ${image}`);
    say('(or set LOCALSTACK_IMAGE to an image you have), with a Docker engine running; then run this again.');
    return undefined;
  }
}

/**
 * Creates the template's table at `endpoint` (LocalStack's) and runs one registration through the
 * registration stack on it.
 */
export async function deployRegistrationStack(endpoint: string): Promise<void> {
  const { create, ttlAttribute } = tableFromTemplate();
  let ttl = 'no TTL in the template';
  const client = new DynamoDBClient({
    endpoint,
    region: REGION,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
  try {
    await client.send(new CreateTableCommand(create));
    await waitUntilTableExists({ client, maxWaitTime: 120 }, { TableName: create.TableName });
    if (ttlAttribute)
      ttl = await client
        .send(
          new UpdateTimeToLiveCommand({
            TableName: create.TableName,
            TimeToLiveSpecification: { AttributeName: ttlAttribute, Enabled: true },
          }),
        )
        .then(
          () => `TTL on ${ttlAttribute}`,
          // dynalite has no TTL; every read checks expiry itself, so the service still runs.
          (err: Error) => `no TTL: this store refused it (${err.name})`,
        );
  } finally {
    client.destroy();
  }
  say(`table ${create.TableName} created from the CDK template (keys, billing; ${ttl})`);
  const stack = await startLocalStack({
    apiPort: 0,
    relayPort: 0,
    httpPort: 0,
    table: create.TableName,
    storeEndpoint: endpoint,
    storeRegion: REGION,
  });
  try {
    const { provisionIdentity } = await import('../../server/identities.js');
    const { currentCode } = await import('../../core/totp.js');
    const id = await provisionIdentity(stack.store, { uuid: 'localstack-check' });
    const put = await fetch(`${stack.apiUrl}/?uuid=${id.uuid}&response=${currentCode(id)}`, {
      method: 'PUT',
    });
    const get = await fetch(`${stack.apiUrl}/?uuid=${id.uuid}`);
    if (put.status !== 200 || get.status !== 200)
      throw new Error(`registration on LocalStack: PUT ${put.status}, GET ${get.status}`);
    say('the registration stack on that table: provision, PUT (register) 200, GET (look-up) 200');
  } finally {
    await stack.close();
  }
}

/** Runs vitest on `files` with the endpoint variable set; resolves with its exit code. */
function runSuites(endpoint: string, files: string[]): Promise<number> {
  const child = spawn(
    process.execPath,
    [join(ROOT, 'node_modules', 'vitest', 'vitest.mjs'), 'run', ...files],
    {
      cwd: ROOT,
      env: { ...process.env, [TEST_ENDPOINT_VAR]: endpoint, RENDEZVOUS_TEST_DYNAMODB_REGION: REGION },
      stdio: 'inherit',
    },
  );
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
}

async function main(): Promise<number> {
  const image = process.env.LOCALSTACK_IMAGE?.trim() || LOCALSTACK_IMAGE;
  const files = process.argv.slice(2);
  say(`starting ${image} (testcontainers)`);
  const container = await startLocalStackContainer(image);
  if (!container) return DID_NOT_RUN_EXIT;
  try {
    const endpoint = container.getConnectionUri();
    await deployRegistrationStack(endpoint);
    say(`running ${(files.length ? files : DEFAULT_FILES).join(' ')} with ${TEST_ENDPOINT_VAR}=${endpoint}`);
    return await runSuites(endpoint, files.length ? files : DEFAULT_FILES);
  } finally {
    await container.stop();
  }
}

// Run only as the entry point (the test imports the table and deploy steps).
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href)
  main().then(
    (code) => process.exit(code),
    (err) => {
      say(`failed: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(1);
    },
  );
