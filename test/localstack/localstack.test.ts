/**
 * `npm run test:localstack` (issue 27, item 11). Its steps after LocalStack starts run here on a
 * separate dynalite — the table made from the CDK template's definition, one registration through
 * the stack on it — and, with no LocalStack image to start (here an image that exists nowhere; on
 * the build machines no registry can be reached for the real one either), it prints DID NOT RUN,
 * that nothing was tested and what to do, and exits 3: never 0, so no pipeline takes it for a pass.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { describe, expect, it } from 'vitest';
import { startStoreServer } from '../../local/store-server.js';
import { deployRegistrationStack, tableFromTemplate } from './run.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe("npm run test:localstack's steps", () => {
  it("reads the table from the CDK template: the state table's name, keys, billing and TTL", () => {
    const { create, ttlAttribute } = tableFromTemplate();
    expect(create).toMatchObject({
      TableName: 'rendezvous',
      BillingMode: 'PAY_PER_REQUEST',
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
    });
    expect(ttlAttribute).toBe('expiresAt');
  }, 120_000);

  it('creates that table on a DynamoDB endpoint and registers through the stack on it', async () => {
    const store = await startStoreServer({ port: 0 });
    const client = new DynamoDBClient({
      endpoint: store.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    try {
      await deployRegistrationStack(store.endpoint);
      const t = await client.send(new DescribeTableCommand({ TableName: 'rendezvous' }));
      expect(t.Table?.TableStatus).toBe('ACTIVE');
    } finally {
      client.destroy();
      await store.close();
    }
  }, 120_000);
});

describe('npm run test:localstack without an image', () => {
  it('says it did not run and exits 3', async () => {
    const child = spawn(
      process.execPath,
      [join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), 'test/localstack/run.ts'],
      {
        cwd: ROOT,
        env: {
          ...process.env,
          LOCALSTACK_IMAGE: 'rendezvous-test/no-such-localstack:absent',
          TESTCONTAINERS_RYUK_DISABLED: 'true',
        },
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
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(out).toMatch(
      /localstack: DID NOT RUN: no LocalStack container could be started from rendezvous-test\/no-such-localstack:absent: \S/,
    );
    expect(out).toMatch(/Nothing was tested against LocalStack/);
    expect(out).toMatch(/docker pull rendezvous-test\/no-such-localstack:absent/);
    expect(out).not.toMatch(/running test\//);
    expect(code).toBe(3);
  }, 180_000);
});
