/**
 * Which store the integration suites run on. By default each test file starts its own embedded
 * dynalite. With `RENDEZVOUS_TEST_DYNAMODB_ENDPOINT` set (LocalStack, DynamoDB Local, a dynalite
 * started on its own, or a DynamoDB endpoint of a test account), every suite that gets its
 * store from test/support/store.ts or test/support/stack.ts runs on that endpoint instead, each
 * on a table of its own (created here, dropped when the suite closes it).
 *
 *   RENDEZVOUS_TEST_DYNAMODB_ENDPOINT  http(s)://host:port of the DynamoDB API to run on
 *   RENDEZVOUS_TEST_DYNAMODB_REGION    its region (default AWS_REGION, else us-east-1)
 *   RENDEZVOUS_TEST_KEEP_TABLES=1      leave the tables behind (to inspect them)
 *
 * A loopback endpoint runs on dummy credentials unless AWS_ACCESS_KEY_ID or AWS_PROFILE is set;
 * any other uses the SDK's usual credentials (a test account's).
 */
import { randomBytes } from 'node:crypto';
import {
  CreateTableCommand,
  DeleteTableCommand,
  DynamoDBClient,
  UpdateTimeToLiveCommand,
  waitUntilTableExists,
} from '@aws-sdk/client-dynamodb';

/** The variable that names the endpoint. */
export const TEST_ENDPOINT_VAR = 'RENDEZVOUS_TEST_DYNAMODB_ENDPOINT';

/** The endpoint the suites run on, or undefined (the embedded store). */
export function externalEndpoint(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env[TEST_ENDPOINT_VAR]?.trim();
  if (!v) return undefined;
  if (!/^https?:\/\/[^/\s]+\/?$/.test(v))
    throw new Error(`${TEST_ENDPOINT_VAR} must be http(s)://host:port (the DynamoDB API), not ${v}`);
  return v.replace(/\/$/, '');
}

/** The region requests to the external endpoint are signed for. */
export function externalRegion(env: NodeJS.ProcessEnv = process.env): string {
  return env.RENDEZVOUS_TEST_DYNAMODB_REGION?.trim() || env.AWS_REGION?.trim() || 'us-east-1';
}

function client(endpoint: string): DynamoDBClient {
  const host = new URL(endpoint).hostname;
  const loopback = host === 'localhost' || host.startsWith('127.') || host === '[::1]';
  const creds = Boolean(process.env.AWS_ACCESS_KEY_ID || process.env.AWS_PROFILE);
  return new DynamoDBClient({
    endpoint,
    region: externalRegion(),
    ...(loopback && !creds ? { credentials: { accessKeyId: 'local', secretAccessKey: 'local' } } : {}),
  });
}

/**
 * Creates a fresh table named after `base` on the external endpoint, as the CDK template defines
 * it (pk/sk strings, on demand, TTL on expiresAt), and waits until it is active (a real account
 * takes seconds). Returns its name.
 */
export async function createExternalTable(endpoint: string, base: string): Promise<string> {
  const name = `${base}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const c = client(endpoint);
  try {
    await c.send(
      new CreateTableCommand({
        TableName: name,
        BillingMode: 'PAY_PER_REQUEST',
        AttributeDefinitions: [
          { AttributeName: 'pk', AttributeType: 'S' },
          { AttributeName: 'sk', AttributeType: 'S' },
        ],
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
      }),
    );
    await waitUntilTableExists({ client: c, maxWaitTime: 180 }, { TableName: name });
    // TTL as deployed; a store without TTL support (dynalite) still runs the suites, since every
    // read checks expiry itself.
    await c
      .send(
        new UpdateTimeToLiveCommand({
          TableName: name,
          TimeToLiveSpecification: { AttributeName: 'expiresAt', Enabled: true },
        }),
      )
      .catch(() => undefined);
    return name;
  } finally {
    c.destroy();
  }
}

/** Drops a table made by createExternalTable (unless RENDEZVOUS_TEST_KEEP_TABLES=1). */
export async function dropExternalTable(endpoint: string, name: string): Promise<void> {
  if (process.env.RENDEZVOUS_TEST_KEEP_TABLES === '1') return;
  const c = client(endpoint);
  try {
    await c.send(new DeleteTableCommand({ TableName: name })).catch(() => undefined);
  } finally {
    c.destroy();
  }
}
