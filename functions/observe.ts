/**
 * What the registration API tells its operator: one log record per registration and per refusal
 * (core/log.ts's schema, service `api`), and the metrics Registrations, Lookups by outcome and
 * ApiRefusals by reason (server/metrics/catalogue.ts). A refusal record names the reason, the
 * uuid when the request carried a well-formed one, and the source address; a store failure's
 * record also names its cause, which the client's `503 store unavailable` never does. Never a
 * code, secret or cookie.
 *
 * In Lambda (`RENDEZVOUS_METRICS=emf`) the EMF records are written at the end of every
 * invocation: a function has no timer that runs between invocations, and a frozen container's
 * unflushed counts would be lost.
 */
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { isRendezvousError } from '../core/errors.js';
import { jsonLog, type Log, type LogFields, RefusalLogGate, silentLog } from '../core/log.js';
import { checkUuid } from '../server/identities.js';
import { METRIC } from '../server/metrics/catalogue.js';
import { type Counter, Metrics } from '../server/metrics/registry.js';
import { failedStore, type StoreSettings } from '../server/store/index.js';

/**
 * Why the API refused a request: the stable `reason` of log records and the `Reason` dimension of
 * ApiRefusals. `internal_error` is a bug of ours (HTTP 500), not a client's doing.
 */
export const API_REFUSAL_REASONS = [
  'missing_parameter',
  'malformed_parameter',
  'wrong_method',
  'auth_failed',
  'not_registered',
  'too_many_attempts',
  'identity_disabled',
  'code_length_refused',
  'store_unavailable',
  'home_unreachable',
  'internal_error',
] as const;

/** One of API_REFUSAL_REASONS. */
export type ApiRefusalReason = (typeof API_REFUSAL_REASONS)[number];

export { REFUSAL_LOGS_PER_REASON, REFUSAL_LOGS_PER_SOURCE, RefusalLogGate } from '../core/log.js';

/** Where the handlers' records and metrics go. */
export interface ApiObservability {
  log: Log;
  metrics: Metrics;
  gate: RefusalLogGate;
  /** Set when EMF records are written after each invocation (`RENDEZVOUS_METRICS=emf`). */
  emf?: { deployment: string; out: NodeJS.WritableStream };
  now: () => number;
}

/** Defaults for tests and the local stack: the given log (else none), a fresh registry, no EMF. */
export function apiObservability(opts: Partial<ApiObservability> = {}): ApiObservability {
  return {
    log: opts.log ?? silentLog,
    metrics: opts.metrics ?? new Metrics(),
    gate: opts.gate ?? new RefusalLogGate(),
    emf: opts.emf,
    now: opts.now ?? Date.now,
  };
}

/**
 * The Lambda functions' setup: JSON records on stdout (CloudWatch Logs), and EMF records after
 * each invocation when `RENDEZVOUS_METRICS=emf`, with the Deployment dimension from
 * `RENDEZVOUS_METRICS_DIMENSION`.
 */
export function apiObservabilityFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  out: NodeJS.WritableStream = process.stdout,
): ApiObservability {
  return apiObservability({
    log: jsonLog('api', out),
    emf:
      env.RENDEZVOUS_METRICS === 'emf'
        ? { deployment: env.RENDEZVOUS_METRICS_DIMENSION || 'rendezvous', out }
        : undefined,
  });
}

/** What a refusal record says about the request. */
export interface RequestFacts {
  /** `register` (PUT) or `lookup` (GET). */
  op: 'register' | 'lookup';
  method: string;
  uuid?: string;
  source: string;
}

/** The uuid and source address of a payload-v2 event, for log records (a malformed uuid is left out). */
export function requestFacts(event: APIGatewayProxyEventV2, op: RequestFacts['op']): RequestFacts {
  let uuid: string | undefined;
  try {
    const raw = event.queryStringParameters?.uuid;
    uuid = raw === undefined || raw.includes(',') ? undefined : checkUuid(raw);
  } catch {
    uuid = undefined;
  }
  return {
    op,
    method: event.requestContext?.http?.method?.toUpperCase() ?? '',
    uuid,
    source: event.requestContext?.http?.sourceIp || 'unknown',
  };
}

/** The refusal reason of an error a handler caught; `home` tells the home replica's failures apart. */
export function reasonOf(err: unknown, home?: StoreSettings): ApiRefusalReason {
  if (!isRendezvousError(err)) return 'internal_error';
  switch (err.code) {
    case 'BAD_REQUEST':
      return err.message.startsWith('missing parameter') ? 'missing_parameter' : 'malformed_parameter';
    case 'METHOD_NOT_ALLOWED':
      return 'wrong_method';
    case 'AUTH_FAILED':
      return 'auth_failed';
    case 'NOT_REGISTERED':
      return 'not_registered';
    case 'TOO_MANY_ATTEMPTS':
      return 'too_many_attempts';
    // Right codes refused anyway (issue 25): the identity's holder is told why.
    case 'IDENTITY_DISABLED':
      return 'identity_disabled';
    case 'CODE_LENGTH_REFUSED':
      return 'code_length_refused';
    case 'STORE_UNAVAILABLE':
      return home && failedStore(err) === home ? 'home_unreachable' : 'store_unavailable';
    default:
      return 'internal_error';
  }
}

/** Refusals an operator should look at; the rest (a typo, a poll before registering) are INFO. */
const WARN_REASONS = new Set<ApiRefusalReason>([
  'auth_failed',
  'too_many_attempts',
  'store_unavailable',
  'home_unreachable',
]);

/** One handler's recorder over an ApiObservability (counters made once per registry). */
export class ApiTelemetry {
  private readonly registrations: Counter;
  private readonly lookups: Counter;
  private readonly refusals: Counter;

  constructor(private readonly obs: ApiObservability) {
    this.registrations = obs.metrics.counter(
      METRIC.registrations,
      'Successful registrations (PUT) of hidden servers',
    );
    this.lookups = obs.metrics.counter(METRIC.lookups, 'Look-ups (GET) by outcome: found or not_found');
    this.refusals = obs.metrics.counter(METRIC.apiRefusals, 'Requests the API refused, by reason');
  }

  /** A hidden server registered. */
  registered(facts: RequestFacts): void {
    this.registrations.inc();
    this.obs.log.info('registered', { event: 'registration', uuid: facts.uuid, source: facts.source });
  }

  /** A look-up answered with a triple. */
  found(): void {
    this.lookups.inc({ outcome: 'found' });
  }

  /** A request refused: counted always, logged within the budget, with the cause for store failures. */
  refused(reason: ApiRefusalReason, facts: RequestFacts, status: number, err?: unknown): void {
    this.refusals.inc({ reason });
    if (reason === 'not_registered') this.lookups.inc({ outcome: 'not_found' });
    const pass = this.obs.gate.take(reason, facts.source);
    if (!pass.ok) return;
    const fields: LogFields = {
      event: 'refusal',
      protocol: 'api',
      reason,
      op: facts.op,
      method: facts.method,
      uuid: facts.uuid,
      source: facts.source,
      status,
      suppressed: pass.suppressed || undefined,
    };
    if (isRendezvousError(err) && err.detail) fields.cause = err.detail;
    if (reason === 'internal_error') {
      // Our own bug: its name and first line, which come from our code, not from the request.
      const e = err as { name?: string; message?: string } | undefined;
      fields.error = `${e?.name ?? 'Error'}: ${String(e?.message ?? '')
        .split('\n')[0]
        ?.slice(0, 200)}`;
      this.obs.log.error('refused', fields);
    } else if (WARN_REASONS.has(reason)) this.obs.log.warn('refused', fields);
    else this.obs.log.info('refused', fields);
  }

  /** End of an invocation: EMF records of what it counted, when EMF is on. */
  flush(): void {
    const emf = this.obs.emf;
    if (!emf) return;
    for (const doc of this.obs.metrics.emf(emf.deployment, this.obs.now()))
      emf.out.write(`${JSON.stringify(doc)}\n`);
  }
}
