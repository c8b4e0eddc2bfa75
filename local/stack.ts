/**
 * The whole service on one machine with no AWS account: embedded store, API adapter calling
 * the Lambda handlers, and one relay, all on 127.0.0.1.
 */

import { type Log, silentLog } from '../core/log.js';
import { directPolicyFromEnv, makeLookupHandler } from '../functions/lookup.js';
import { apiObservability } from '../functions/observe.js';
import { makeRegisterHandler } from '../functions/register.js';
import { RELAY_DEFAULTS, type Relay, type RelayOptions, startRelay } from '../relay/server.js';
import { DEFAULT_TABLE } from '../server/config.js';
import type { RegistrationPolicy } from '../server/register.js';
import { Store } from '../server/store/index.js';
import { startApiAdapter } from './api-adapter.js';
import { startStoreServer } from './store-server.js';

/** Ports (0 picks a free one) and options of the local stack. */
export interface LocalStackOptions {
  apiPort?: number;
  relayPort?: number;
  storePort?: number;
  /** Keep the store on disk in this folder (default: memory). */
  dataDir?: string;
  /**
   * Run on this DynamoDB endpoint (DynamoDB Local, LocalStack, a dynalite of its own) instead of
   * starting the embedded store; `storePort` and `dataDir` are then unused.
   */
  storeEndpoint?: string;
  /** The region requests to `storeEndpoint` are signed for (default `local`). */
  storeRegion?: string;
  table?: string;
  /** Overrides of the registration policy (tests shorten windows). */
  policy?: Partial<RegistrationPolicy>;
  /** HTTP-specific protocol port (default 8898; 0 picks one). */
  httpPort?: number;
  /** Joins relays started with `rendezvous relay` against the same store (enables the peer port). */
  clusterSecret?: string;
  /** Overrides of relay limits (tests shorten deadlines). */
  relay?: Partial<Omit<RelayOptions, 'store' | 'port' | 'host' | 'httpPort'>>;
  log?: Log;
  /** The API handlers' records (registrations, refusals); default: none. */
  apiLog?: Log;
}

/** A running local stack. */
export interface LocalStack {
  apiUrl: string;
  storeEndpoint: string;
  relayHost: string;
  relayPort: number;
  httpPort: number;
  /** `host:port` other relays of the cluster dial (when a cluster secret is set). */
  peer?: string;
  table: string;
  store: Store;
  relay: Relay;
  /** The environment the CLI needs to use this stack. */
  env: Record<string, string>;
  close(): Promise<void>;
}

/**
 * Wrong codes per source address per window on the local stack. Every client of a local stack
 * arrives from 127.0.0.1, so the deployed default (5) would let one agent with a wrong secret
 * make every other local agent wait out the window; the per-uuid limit still holds.
 */
export const LOCAL_MAX_FAILURES_PER_SOURCE = 50;

/**
 * Relay limits per source address that differ on the local stack, for the same reason: live
 * rendezvous per hidden server from one address is the per-hidden-server cap itself here.
 */
export const LOCAL_RELAY_LIMITS = { maxSplicesPerSource: RELAY_DEFAULTS.maxSplicesPerUuid } as const;

/** Defaults of `npm start`. */
export const LOCAL_DEFAULTS = { apiPort: 8080, relayPort: 8899, httpPort: 8898, storePort: 8000 } as const;

/** Starts store, relay and API; resolves once all three listen. */
export async function startLocalStack(opts: LocalStackOptions = {}): Promise<LocalStack> {
  const log = opts.log ?? silentLog;
  const table = opts.table ?? DEFAULT_TABLE;
  const storeServer = opts.storeEndpoint
    ? { endpoint: opts.storeEndpoint, close: async () => undefined }
    : await startStoreServer({ port: opts.storePort ?? LOCAL_DEFAULTS.storePort, path: opts.dataDir });
  const storeRegion = opts.storeRegion ?? 'local';
  const store = new Store({ table, endpoint: storeServer.endpoint, region: storeRegion });
  const guessPolicy = { maxFailuresPerSource: LOCAL_MAX_FAILURES_PER_SOURCE, ...opts.policy };
  const cleanup: Array<() => Promise<void> | void> = [() => storeServer.close(), () => store.close()];
  try {
    await store.ensureTable();
    const relay = await startRelay({
      peerPort: 0,
      ...LOCAL_RELAY_LIMITS,
      ...opts.relay,
      store,
      port: opts.relayPort ?? LOCAL_DEFAULTS.relayPort,
      httpPort: opts.httpPort ?? LOCAL_DEFAULTS.httpPort,
      host: '127.0.0.1',
      clusterSecret: opts.clusterSecret,
      connectPolicy: { ...guessPolicy, ...opts.relay?.connectPolicy },
      log,
    });
    cleanup.unshift(() => relay.close());
    const httpUrl = `http://127.0.0.1:${relay.httpAddress?.port}`;
    const policy: RegistrationPolicy = {
      relayHost: '127.0.0.1',
      relayPort: relay.address.port,
      region: 'local',
      ...guessPolicy,
    };
    const obs = apiObservability({ log: opts.apiLog });
    const api = await startApiAdapter({
      register: makeRegisterHandler(() => ({ store, policy }), obs),
      lookup: makeLookupHandler(() => ({ store, direct: directPolicyFromEnv() }), obs),
      port: opts.apiPort ?? LOCAL_DEFAULTS.apiPort,
    });
    cleanup.unshift(() => api.close());
    return {
      apiUrl: api.url,
      storeEndpoint: storeServer.endpoint,
      relayHost: '127.0.0.1',
      relayPort: relay.address.port,
      httpPort: relay.httpAddress?.port as number,
      peer: relay.peerAddress ? `127.0.0.1:${relay.peerAddress.port}` : undefined,
      table,
      store,
      relay,
      env: {
        AWS_ENDPOINT_URL_DYNAMODB: storeServer.endpoint,
        AWS_REGION: storeRegion,
        RENDEZVOUS_TABLE: table,
        RENDEZVOUS_API: api.url,
        RENDEZVOUS_RELAY_HTTP: httpUrl,
      },
      close: async () => {
        for (const fn of cleanup) await fn();
      },
    };
  } catch (err) {
    for (const fn of cleanup) await fn();
    throw err;
  }
}
