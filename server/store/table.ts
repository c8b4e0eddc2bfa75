/**
 * Table access: the one DynamoDB client of a process, and the only place SDK calls are made.
 * Every request goes through `call`, which turns SDK errors into typed errors (errors.ts) and
 * lets a failed condition through for the caller to decide on (`isConditionFailed`). Every write
 * is a single-item (conditional) write, so it runs on DynamoDB, DynamoDB Local and dynalite alike.
 */
import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ResourceInUseException,
} from '@aws-sdk/client-dynamodb';
import {
  DeleteCommand,
  type DeleteCommandInput,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  type PutCommandInput,
  QueryCommand,
  type QueryCommandInput,
  ScanCommand,
  type ScanCommandInput,
  UpdateCommand,
  type UpdateCommandInput,
} from '@aws-sdk/lib-dynamodb';
import { RendezvousError, storeUnavailable } from '../../core/errors.js';
import { type StoreSettings, storeFailure, storeSettings } from './errors.js';

/** How to reach the table. */
export interface StoreOptions {
  table: string;
  /** Overrides the SDK's endpoint (else `AWS_ENDPOINT_URL_DYNAMODB` / the default applies). */
  endpoint?: string;
  region?: string;
}

/** Longest a single store request may take before it counts as a failure. */
export const STORE_REQUEST_TIMEOUT_MS = 3_000;

/** One item as the table holds it (keys included). */
export type Item = Record<string, unknown>;

/** A request's input without the table name, which the Table adds. */
type Input<T> = Omit<T, 'TableName'>;

/** True when a conditional write failed its condition (the caller's case, not a store failure). */
export function isConditionFailed(err: unknown): boolean {
  return err instanceof ConditionalCheckFailedException;
}

/** An item without its `pk`/`sk` keys. */
export function withoutKeys<T>(item: Item): T {
  const { pk: _pk, sk: _sk, ...rest } = item;
  return rest as T;
}

function isLoopback(endpoint: string | undefined): boolean {
  if (!endpoint) return false;
  try {
    const host = new URL(endpoint).hostname;
    return host === 'localhost' || host === '[::1]' || host.startsWith('127.');
  } catch {
    return false;
  }
}

/** The table and its SDK client. One instance (one SDK client) per process. */
export class Table {
  readonly name: string;
  /** What this store runs on and where each setting came from (named when it fails). */
  readonly settings: StoreSettings;
  private readonly raw: DynamoDBClient;
  private readonly doc: DynamoDBDocumentClient;

  constructor(opts: StoreOptions) {
    this.name = opts.table;
    this.settings = storeSettings(opts);
    const endpoint = this.settings.endpoint;
    const local = isLoopback(endpoint);
    const hasCreds = Boolean(process.env.AWS_ACCESS_KEY_ID || process.env.AWS_PROFILE);
    this.raw = new DynamoDBClient({
      endpoint,
      region: this.settings.region,
      // Dummy credentials only for a local store, so a real deployment never runs on them.
      ...(local && !hasCreds ? { credentials: { accessKeyId: 'local', secretAccessKey: 'local' } } : {}),
      // A dead or frozen store must fail fast: callers answer 503 / -ERR rather than hang. Without
      // throwOnRequestTimeout the SDK only logs a warning when requestTimeout passes.
      maxAttempts: 2,
      requestHandler: {
        connectionTimeout: 1_000,
        requestTimeout: STORE_REQUEST_TIMEOUT_MS,
        throwOnRequestTimeout: true,
      },
    });
    this.doc = DynamoDBDocumentClient.from(this.raw, {
      marshallOptions: { removeUndefinedValues: true },
    });
  }

  /** Creates the table if missing (local stacks and tests; CDK owns it on AWS). */
  async ensureTable(): Promise<void> {
    try {
      await this.raw.send(
        new CreateTableCommand({
          TableName: this.name,
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
    } catch (err) {
      if (!(err instanceof ResourceInUseException)) throw storeFailure(err, this.settings);
    }
    for (let i = 0; i < 100; i++) {
      const t = await this.raw.send(new DescribeTableCommand({ TableName: this.name }));
      if (t.Table?.TableStatus === 'ACTIVE') return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw storeUnavailable(new Error(`table ${this.name} did not become active`));
  }

  /** Releases the SDK client's sockets. */
  close(): void {
    this.raw.destroy();
  }

  /** Runs one request; SDK errors leave as STORE_UNAVAILABLE, failed conditions as they are. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof RendezvousError || err instanceof ConditionalCheckFailedException) throw err;
      throw storeFailure(err, this.settings);
    }
  }

  /** A strongly consistent read of one item, without its keys. */
  async get<T>(pk: string, sk: string): Promise<T | undefined> {
    const out = await this.call(() =>
      this.doc.send(new GetCommand({ TableName: this.name, Key: { pk, sk }, ConsistentRead: true })),
    );
    return out.Item ? withoutKeys<T>(out.Item) : undefined;
  }

  /** Writes one item; returns the attributes the request asked back (`ReturnValues`). */
  async put(input: Input<PutCommandInput>): Promise<Item | undefined> {
    const out = await this.call(() => this.doc.send(new PutCommand({ TableName: this.name, ...input })));
    return out.Attributes;
  }

  /** Updates one item; returns the attributes the request asked back (`ReturnValues`). */
  async update(input: Input<UpdateCommandInput>): Promise<Item | undefined> {
    const out = await this.call(() => this.doc.send(new UpdateCommand({ TableName: this.name, ...input })));
    return out.Attributes;
  }

  /** Deletes one item; returns the attributes the request asked back (`ReturnValues`). */
  async delete(input: Input<DeleteCommandInput>): Promise<Item | undefined> {
    const out = await this.call(() => this.doc.send(new DeleteCommand({ TableName: this.name, ...input })));
    return out.Attributes;
  }

  /** One page of a query (callers that bound the result with `Limit`). */
  async queryPage(input: Input<QueryCommandInput>): Promise<Item[]> {
    const out = await this.call(() => this.doc.send(new QueryCommand({ TableName: this.name, ...input })));
    return out.Items ?? [];
  }

  /** Every item a query matches, page after page. */
  async queryAll(input: Input<QueryCommandInput>): Promise<Item[]> {
    return this.allPages((start) =>
      this.doc.send(new QueryCommand({ TableName: this.name, ...input, ExclusiveStartKey: start })),
    );
  }

  /** Every item a scan matches, page after page. */
  async scanAll(input: Input<ScanCommandInput>): Promise<Item[]> {
    return this.allPages((start) =>
      this.doc.send(new ScanCommand({ TableName: this.name, ...input, ExclusiveStartKey: start })),
    );
  }

  /** The paging loop: asks for the next page from where the last one ended until none is left. */
  private async allPages(
    page: (start: Item | undefined) => Promise<{ Items?: Item[]; LastEvaluatedKey?: Item }>,
  ): Promise<Item[]> {
    const out: Item[] = [];
    let start: Item | undefined;
    do {
      const p = await this.call(() => page(start));
      out.push(...(p.Items ?? []));
      start = p.LastEvaluatedKey;
    } while (start);
    return out;
  }
}
