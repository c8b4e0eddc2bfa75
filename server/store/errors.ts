/**
 * Store failures that name their cause. Every SDK error leaves the store as STORE_UNAVAILABLE —
 * what a client of the API sees, and all it should see — but the error also carries a `detail`
 * for operators: one line saying which setting is missing or what the endpoint answered
 * (`store: table "X" not found at http://127.0.0.1:8000 (AWS_ENDPOINT_URL_DYNAMODB)`). The CLI
 * prints it instead of "try again later"; the API handlers log it. It names settings and their
 * non-secret values (table, endpoint without userinfo, region), never credentials.
 */
import { type RendezvousError, storeUnavailable } from '../../core/errors.js';

/** The settings a Store runs on, and where each came from (to name them in a failure). */
export interface StoreSettings {
  table: string;
  /** The setting that names the table: `RENDEZVOUS_TABLE`, or `--table` (where neither is set: both). */
  tableFrom: string;
  endpoint?: string;
  /** `AWS_ENDPOINT_URL_DYNAMODB`, or undefined when the caller passed the endpoint itself. */
  endpointFrom?: string;
  region: string;
  /** `AWS_REGION`, `AWS_DEFAULT_REGION`, `option`, or `default` (none set: us-east-1). */
  regionFrom: 'AWS_REGION' | 'AWS_DEFAULT_REGION' | 'option' | 'default';
}

/** The region the SDK client gets when nothing names one. */
export const FALLBACK_REGION = 'us-east-1';

/** Works out a Store's settings from its options and the environment, as the Store applies them. */
export function storeSettings(
  opts: { table: string; endpoint?: string; region?: string },
  env: NodeJS.ProcessEnv = process.env,
): StoreSettings {
  const endpoint = opts.endpoint ?? (env.AWS_ENDPOINT_URL_DYNAMODB || undefined);
  const regionFrom: StoreSettings['regionFrom'] = opts.region
    ? 'option'
    : env.AWS_REGION
      ? 'AWS_REGION'
      : env.AWS_DEFAULT_REGION
        ? 'AWS_DEFAULT_REGION'
        : 'default';
  return {
    table: opts.table,
    // Every caller takes the table from --table, else RENDEZVOUS_TABLE, else the default name.
    tableFrom:
      env.RENDEZVOUS_TABLE === opts.table
        ? 'RENDEZVOUS_TABLE'
        : env.RENDEZVOUS_TABLE
          ? '--table'
          : '--table or RENDEZVOUS_TABLE',
    endpoint,
    endpointFrom: opts.endpoint === undefined && endpoint ? 'AWS_ENDPOINT_URL_DYNAMODB' : undefined,
    region: opts.region || env.AWS_REGION || env.AWS_DEFAULT_REGION || FALLBACK_REGION,
    regionFrom,
  };
}

/** An endpoint URL fit to print: without user info, query or fragment. */
function printable(endpoint: string): string {
  try {
    const u = new URL(endpoint);
    u.username = '';
    u.password = '';
    u.search = '';
    u.hash = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return JSON.stringify(endpoint.slice(0, 100));
  }
}

/** Where the store is, in words, with the setting that says so. */
function whereOf(s: StoreSettings): string {
  if (s.endpoint) return `${printable(s.endpoint)}${s.endpointFrom ? ` (${s.endpointFrom})` : ''}`;
  return `DynamoDB in ${s.region}${s.regionFrom === 'option' ? '' : ` (${s.regionFrom})`}`;
}

const CREDENTIAL_REFUSALS = new Set([
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'MissingAuthenticationTokenException',
  'ExpiredTokenException',
  'InvalidClientTokenId',
]);
const THROTTLED = new Set([
  'ProvisionedThroughputExceededException',
  'ThrottlingException',
  'RequestLimitExceeded',
]);
const CONNECT_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EPIPE',
]);

/** One line of an SDK message (they can run to several, with hints for developers). */
const firstLine = (text: string) => (text.split('\n')[0] ?? '').slice(0, 160);

/** The one-line cause of a store failure (`store: …`), from the SDK error and the settings. */
export function describeStoreFailure(err: unknown, s: StoreSettings): string {
  const e = (err ?? {}) as {
    name?: string;
    code?: string;
    message?: string;
    hostname?: string;
    $metadata?: { httpStatusCode?: number };
    __type?: string;
  };
  const name = e.name ?? '';
  const where = whereOf(s);
  if (s.endpoint && !/^https?:\/\/[^/]/.test(s.endpoint)) {
    // Quoted as given, less anything up to an `@` (user info is no business of a log).
    const given = JSON.stringify(s.endpoint.replace(/^[^@]*@/, '').slice(0, 100));
    return `store: ${s.endpointFrom ?? 'the endpoint'} is not an http:// or https:// URL: ${given}`;
  }
  if (!s.endpoint && s.regionFrom === 'default') {
    return 'store: no region set (AWS_REGION), and no endpoint (AWS_ENDPOINT_URL_DYNAMODB) for a local store';
  }
  if (name === 'CredentialsProviderError') {
    return `store: no AWS credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY${
      s.endpoint ? '; a 127.0.0.1 or localhost endpoint needs none' : ''
    }) for ${where}`;
  }
  if (name === 'ResourceNotFoundException') {
    return `store: table "${s.table}" (${s.tableFrom}) not found at ${where}`;
  }
  if (CREDENTIAL_REFUSALS.has(name)) return `store: ${where} refused the credentials: ${name}`;
  if (name === 'AccessDeniedException') {
    return `store: access to table "${s.table}" denied at ${where}: ${firstLine(e.message ?? '')}`;
  }
  if (THROTTLED.has(name)) return `store: ${where} is throttling requests: ${name}`;
  if (name === 'TimeoutError' || name === 'RequestTimeout' || name === 'TimeoutException') {
    return `store: no answer from ${where} in time: ${name}`;
  }
  if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') {
    return `store: cannot resolve ${e.hostname ?? 'the store host'} (${s.endpoint ? (s.endpointFrom ?? 'endpoint') : 'AWS_REGION'}): ${e.code}`;
  }
  if (e.code && CONNECT_ERRORS.has(e.code)) return `store: cannot connect to ${where}: ${e.code}`;
  const status = e.$metadata?.httpStatusCode;
  // An answer the SDK could not read as DynamoDB's (an HTML page, another service on the port).
  if (status !== undefined && !e.__type) {
    return `store: ${where} answered HTTP ${status}, not as DynamoDB does (wrong endpoint?)`;
  }
  return `store: ${where} failed: ${name || 'error'}${e.code ? ` ${e.code}` : ''}${
    e.message ? `: ${firstLine(e.message)}` : ''
  }`;
}

/** Which store each failure came from (the register handler tells the home replica apart). */
const origins = new WeakMap<object, StoreSettings>();

/** STORE_UNAVAILABLE for an SDK error, carrying the described cause as its `detail`. */
export function storeFailure(err: unknown, s: StoreSettings): RendezvousError {
  const failure = storeUnavailable(err, describeStoreFailure(err, s));
  origins.set(failure, s);
  return failure;
}

/** The settings of the store a failure came from (compare with a Store's `settings`). */
export function failedStore(err: unknown): StoreSettings | undefined {
  return typeof err === 'object' && err !== null ? origins.get(err) : undefined;
}
