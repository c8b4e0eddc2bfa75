/** Reading configuration from the environment, in one place, with clear errors. */
import { DEFAULT_COOKIE_TTL_SECONDS } from './cookies.js';
import { FAILURE_LIMIT_DEFAULTS } from './limits.js';
import type { RegistrationPolicy } from './register.js';

/** Default table name, shared by the CLI, the local stack and the handlers. */
export const DEFAULT_TABLE = 'rendezvous';

/** Reads an integer variable, falling back to `fallback`; throws on garbage. */
export function intFromEnv(name: string, fallback: number, env = process.env): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer`);
  return n;
}

/** The table named by `RENDEZVOUS_TABLE`. */
export function tableFromEnv(env = process.env): string {
  return env.RENDEZVOUS_TABLE || DEFAULT_TABLE;
}

/** Cookie lifetime and the guess limits, shared by the register handler and the relay's CONNECT. */
export function authPolicyFromEnv(env = process.env): Omit<RegistrationPolicy, 'relayHost' | 'relayPort'> {
  return {
    cookieTtlSeconds: intFromEnv('RENDEZVOUS_COOKIE_TTL', DEFAULT_COOKIE_TTL_SECONDS, env),
    maxFailures: intFromEnv('RENDEZVOUS_MAX_FAILURES', FAILURE_LIMIT_DEFAULTS.maxFailures, env),
    maxFailuresPerSource: intFromEnv(
      'RENDEZVOUS_MAX_FAILURES_PER_SOURCE',
      FAILURE_LIMIT_DEFAULTS.maxFailuresPerSource,
      env,
    ),
    failureWindowSeconds: intFromEnv(
      'RENDEZVOUS_FAILURE_WINDOW',
      FAILURE_LIMIT_DEFAULTS.failureWindowSeconds,
      env,
    ),
  };
}

/** The registration policy of a handler process, from its environment. */
export function policyFromEnv(env = process.env): RegistrationPolicy {
  const relayHost = env.RELAY_PUBLIC_HOST;
  if (!relayHost) throw new Error('RELAY_PUBLIC_HOST is not set');
  return {
    ...authPolicyFromEnv(env),
    relayHost,
    relayPort: intFromEnv('RELAY_PUBLIC_PORT', 8899, env),
    relayTlsPort: intFromEnv('RELAY_PUBLIC_TLS_PORT', 0, env) || undefined,
    region: env.AWS_REGION,
  };
}
