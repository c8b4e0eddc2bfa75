/**
 * The relay process entry point (the container, and `rendezvous relay`): reads the environment,
 * starts the relay, and drains on SIGTERM/SIGINT, exiting 0.
 *
 *   RELAY_PORT               generic-protocol port (8899)
 *   RELAY_HTTP_PORT          HTTP-specific port (8898; "off" disables)
 *   RELAY_BIND               listen address of the public ports (0.0.0.0)
 *   RELAY_HEALTH_PORT        `GET /healthz` port (off when unset)
 *   RELAY_CLUSTER_SECRET     shared by all relays of one deployment; enables the peer port
 *   RELAY_PEER_PORT          peer port (8897)
 *   RELAY_PEER_HOST          address other relays dial (on ECS: the task's private IP, read from
 *                            the task metadata endpoint when unset)
 *   RELAY_PEER_BIND          listen address of the peer port (default: RELAY_PEER_HOST when it is
 *                            an address of this machine, as the ECS task's private IP is; else RELAY_BIND)
 *   RELAY_MAX_PEER_HANDSHAKES  peer-port connections not yet authenticated, at once (256; never
 *                            more than a quarter of the descriptor ceiling's connections)
 *   RELAY_PEER_UNBOUND_GRACE_MS  for this long after the start, peer lines that name no destination
 *                            relay (the previous release's, during a rolling deploy) are accepted (900000; 0 never)
 *   RELAY_PUBLIC_HOST/_PORT  what triples name (read by the register function and `dev`; logged here,
 *                            and written into park records for the operator console)
 *   RELAY_DIRECT_HOST/_PORT  direct addressing: where mobile clients reach this relay itself (its
 *                            public IP or name; port default: RELAY_PORT's), written into its park
 *                            records so look-ups name it for the hidden servers it holds (off when
 *                            unset); `ecs-public-ip`: the task's public IPv4 (ECS, assignPublicIp)
 *   RELAY_HEARTBEAT_MS       how often the relay writes its heartbeat (30000; alive for 3 beats)
 *   RELAY_HANDSHAKE_MS       cookie-line / request-head deadline (10000)
 *   RELAY_PAIR_WAIT_MS       how long a mobile client waits for a parked socket (5000)
 *   RELAY_REVALIDATE_MS      period of reading change notices and re-checking the uuids they name,
 *                            and of refusing parked cookies that expired (10000)
 *   RELAY_MAX_PARKED         parked sockets per cookie or uuid (64)
 *   RELAY_MAX_HANDSHAKES_PER_SOURCE / RELAY_MAX_HANDSHAKES
 *                            connections still in handshake per source address (64) and in all (10000)
 *   RELAY_MAX_WAITING_PER_SOURCE / RELAY_MAX_WAITING
 *                            mobile clients waiting for a hidden server to park, per source
 *                            address (128) and in all (10000)
 *   RELAY_MAX_SPLICES_PER_UUID  live rendezvous per hidden server on this relay (100)
 *   RELAY_MAX_SPLICES_PER_SOURCE  live rendezvous per hidden server from one source address
 *                            (IPv6: /64) on this relay (16)
 *   RELAY_PEER_POOL          idle links kept open to each other relay, for the next cross-relay
 *                            pairing (16; 0 turns the pool off)
 *   RELAY_IDLE_TIMEOUT_MS    a rendezvous with no byte either way for this long is ended (3600000; 0 never)
 *   RELAY_BANDWIDTH_LEASE_MS how often a relay carrying a bandwidth-capped identity's traffic
 *                            refreshes its lease on a share of the cap (5000; relay/bandwidth.ts)
 *   RELAY_HTTP_DOMAIN        HTTP-specific: `<id>.<domain>` in Host names hidden server <id> (off)
 *   RELAY_HTTP_SHARED_ORIGIN with RELAY_HTTP_DOMAIN: `on` lets the domain's own name serve tenants
 *                            named by ?rendezvous=, Digest or Basic (off: 403; unsafe for browsers)
 *   RELAY_DRAIN_GRACE_MS     how long live splices may run after SIGTERM (60000)
 *   RELAY_METERING           usage per identity written to the store (on; off turns it off)
 *   RELAY_METER_FLUSH_MS     period of the usage flush: one write per active identity (60000)
 *   RELAY_CONNECT_CODE_REUSE live-park (default) or never — see the HTTP-specific protocol
 *   RENDEZVOUS_TABLE, AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION   the store
 *   RELAY_REGION             multi-region: this relay's region, written into park records (off)
 *   RELAY_HTTP_PUBLIC_URL    multi-region: public base URL of this region's HTTP-specific port
 *                            (https://relay-eu-west-1.example.com); other regions redirect there
 *   RENDEZVOUS_HOME_REGION   multi-region: the table's home region, where CONNECT codes are claimed
 *   RENDEZVOUS_METRICS       emf: write the metrics to stdout as CloudWatch EMF once a minute (off)
 *   RENDEZVOUS_METRICS_DIMENSION  the EMF Deployment dimension's value (rendezvous; the CDK sets the stack name)
 */
import { pathToFileURL } from 'node:url';
import { jsonLog, type Log } from '../core/log.js';
import { claimsRouterFromEnv } from '../server/claims.js';
import { authPolicyFromEnv, intFromEnv, tableFromEnv } from '../server/config.js';
import { startEmfFlush } from '../server/metrics/registry.js';
import { Store } from '../server/store/index.js';
import { BANDWIDTH_LEASE_MS } from './bandwidth.js';
import { ecsPublicIp } from './ecs-public-ip.js';
import { stdoutSink } from './log-sink.js';
import { METER_FLUSH_MS } from './metering.js';
import { MAX_PEER_HANDSHAKES } from './peer-listener.js';
import { PEER_POOL_DEFAULTS } from './peer-pool.js';
import { RELAY_DEFAULTS, type Relay, startRelay } from './server.js';

/**
 * The address other relays dial: RELAY_PEER_HOST, else on ECS the task's private IPv4 from the
 * task metadata endpoint (v4), else the bind address when it is a specific one, else 127.0.0.1.
 */
export async function discoverPeerHost(env: NodeJS.ProcessEnv, bind: string): Promise<string> {
  if (env.RELAY_PEER_HOST) return env.RELAY_PEER_HOST;
  const metadata = env.ECS_CONTAINER_METADATA_URI_V4;
  if (metadata) {
    const res = await fetch(`${metadata}/task`, { signal: AbortSignal.timeout(2_000) });
    const task = (await res.json()) as {
      Containers?: Array<{ Networks?: Array<{ IPv4Addresses?: string[] }> }>;
    };
    for (const c of task.Containers ?? []) {
      const ip = c.Networks?.[0]?.IPv4Addresses?.[0];
      if (ip) return ip;
    }
    throw new Error('no IPv4 address in the ECS task metadata');
  }
  return bind === '0.0.0.0' || bind === '::' ? '127.0.0.1' : bind;
}

/**
 * RELAY_DIRECT_HOST/_PORT → the relay's direct address (none when unset). `ecs-public-ip` reads
 * the task's public IPv4 (ecs-public-ip.ts); a relay that cannot find one starts without a direct
 * address (clients then come through the front, as without direct addressing) and says so.
 */
async function directFromEnv(
  env: NodeJS.ProcessEnv,
  log: Log,
): Promise<{ directHost?: string; directPort?: number }> {
  const host = env.RELAY_DIRECT_HOST?.trim();
  if (!host) return {};
  const directPort = env.RELAY_DIRECT_PORT ? intFromEnv('RELAY_DIRECT_PORT', 0, env) : undefined;
  if (host !== 'ecs-public-ip') {
    if (!/^[A-Za-z0-9.:-]{1,253}$/.test(host))
      throw new Error('RELAY_DIRECT_HOST must be an IP address, a host name or ecs-public-ip');
    return { directHost: host, directPort };
  }
  const ip = await ecsPublicIp(env).catch((err: Error) => {
    log.warn('no direct address: the task public IP was not found', { reason: err.message });
    return undefined;
  });
  if (ip) log.info('direct address', { host: ip, port: directPort });
  return ip ? { directHost: ip, directPort } : {};
}

/** RELAY_HTTP_DOMAIN, checked to be a host name (`relay.example.com`), or undefined. */
function httpDomainFromEnv(env: NodeJS.ProcessEnv): string | undefined {
  const domain = env.RELAY_HTTP_DOMAIN?.trim().toLowerCase().replace(/\.$/, '');
  if (!domain) return undefined;
  if (!/^(?=.{1,253}$)[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})*$/.test(domain))
    throw new Error('RELAY_HTTP_DOMAIN must be a host name such as relay.example.com');
  return domain;
}

/** A switch: `on`/`true`/`1` or `off`/`false`/`0` (off when unset). */
function onOffFromEnv(name: string, env: NodeJS.ProcessEnv): boolean {
  const v = env[name]?.trim().toLowerCase() ?? '';
  if (['on', 'true', '1'].includes(v)) return true;
  if (['', 'off', 'false', '0'].includes(v)) return false;
  throw new Error(`${name} must be on or off`);
}

/** RELAY_METERING (on unless `off`) and RELAY_METER_FLUSH_MS (60000). */
function meteringFromEnv(env: NodeJS.ProcessEnv): false | { flushMs: number } {
  if (env.RELAY_METERING?.trim() && !onOffFromEnv('RELAY_METERING', env)) return false;
  return { flushMs: intFromEnv('RELAY_METER_FLUSH_MS', METER_FLUSH_MS, env) };
}

/**
 * Multi-region settings: RELAY_REGION, RELAY_HTTP_PUBLIC_URL (an http(s) URL) and, when
 * RENDEZVOUS_HOME_REGION names another region than this one, a store on the home replica.
 */
export function regionFromEnv(env: NodeJS.ProcessEnv = process.env): {
  region?: string;
  httpPublicUrl?: string;
  home?: Store;
} {
  const region = env.RELAY_REGION?.trim() || undefined;
  const url = env.RELAY_HTTP_PUBLIC_URL?.trim() || undefined;
  if (url) {
    let ok = false;
    try {
      ok = /^https?:$/.test(new URL(url).protocol);
    } catch {}
    if (!ok)
      throw new Error(
        'RELAY_HTTP_PUBLIC_URL must be an http(s) URL such as https://relay-eu-west-1.example.com',
      );
  }
  const homeRegion = env.RENDEZVOUS_HOME_REGION?.trim();
  const here = region ?? env.AWS_REGION;
  const home =
    homeRegion && homeRegion !== here
      ? new Store({ table: tableFromEnv(env), region: homeRegion })
      : undefined;
  return { region, httpPublicUrl: url, home };
}

/** The relay limits and policies the environment sets (shared with `rendezvous dev`). */
export function relayLimitsFromEnv(env: NodeJS.ProcessEnv = process.env) {
  const reuse = env.RELAY_CONNECT_CODE_REUSE || 'live-park';
  if (reuse !== 'live-park' && reuse !== 'never')
    throw new Error('RELAY_CONNECT_CODE_REUSE must be live-park or never');
  return {
    handshakeTimeoutMs: intFromEnv('RELAY_HANDSHAKE_MS', RELAY_DEFAULTS.handshakeTimeoutMs, env),
    pairWaitMs: intFromEnv('RELAY_PAIR_WAIT_MS', RELAY_DEFAULTS.pairWaitMs, env),
    revalidateMs: intFromEnv('RELAY_REVALIDATE_MS', RELAY_DEFAULTS.revalidateMs, env),
    maxParkedPerKey: intFromEnv('RELAY_MAX_PARKED', RELAY_DEFAULTS.maxParkedPerKey, env),
    maxHandshakesPerSource: intFromEnv(
      'RELAY_MAX_HANDSHAKES_PER_SOURCE',
      RELAY_DEFAULTS.maxHandshakesPerSource,
      env,
    ),
    maxHandshakes: intFromEnv('RELAY_MAX_HANDSHAKES', RELAY_DEFAULTS.maxHandshakes, env),
    maxPeerHandshakes: intFromEnv('RELAY_MAX_PEER_HANDSHAKES', MAX_PEER_HANDSHAKES, env),
    peerUnboundGraceMs: intFromEnv('RELAY_PEER_UNBOUND_GRACE_MS', RELAY_DEFAULTS.peerUnboundGraceMs, env),
    maxWaitingPerSource: intFromEnv('RELAY_MAX_WAITING_PER_SOURCE', RELAY_DEFAULTS.maxWaitingPerSource, env),
    maxWaiting: intFromEnv('RELAY_MAX_WAITING', RELAY_DEFAULTS.maxWaiting, env),
    maxSplicesPerUuid: intFromEnv('RELAY_MAX_SPLICES_PER_UUID', RELAY_DEFAULTS.maxSplicesPerUuid, env),
    maxSplicesPerSource: intFromEnv('RELAY_MAX_SPLICES_PER_SOURCE', RELAY_DEFAULTS.maxSplicesPerSource, env),
    idleTimeoutMs: intFromEnv('RELAY_IDLE_TIMEOUT_MS', RELAY_DEFAULTS.idleTimeoutMs, env),
    bandwidthLeaseMs: intFromEnv('RELAY_BANDWIDTH_LEASE_MS', BANDWIDTH_LEASE_MS, env),
    httpDomain: httpDomainFromEnv(env),
    httpSharedOrigin: onOffFromEnv('RELAY_HTTP_SHARED_ORIGIN', env),
    peerPool: {
      ...PEER_POOL_DEFAULTS,
      maxIdlePerPeer: intFromEnv('RELAY_PEER_POOL', PEER_POOL_DEFAULTS.maxIdlePerPeer, env),
    },
    connectPolicy: { ...authPolicyFromEnv(env), codeReuse: reuse as 'live-park' | 'never' },
    metering: meteringFromEnv(env),
  };
}

/** Starts a relay configured from `env`; resolves once it listens. */
export async function runRelayFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  log: Log = jsonLog('relay'),
): Promise<{ relay: Relay; store: Store; graceMs: number }> {
  const bind = env.RELAY_BIND || '0.0.0.0';
  const secret = env.RELAY_CLUSTER_SECRET || undefined;
  const reuse = env.RELAY_CONNECT_CODE_REUSE || 'live-park';
  if (reuse !== 'live-park' && reuse !== 'never')
    throw new Error('RELAY_CONNECT_CODE_REUSE must be live-park or never');
  const httpPort =
    env.RELAY_HTTP_PORT === 'off' ? undefined : intFromEnv('RELAY_HTTP_PORT', RELAY_DEFAULTS.httpPort, env);
  const store = new Store({ table: tableFromEnv(env) });
  const relay = await startRelay({
    store,
    port: intFromEnv('RELAY_PORT', RELAY_DEFAULTS.port, env),
    httpPort,
    host: bind,
    clusterSecret: secret,
    peerPort: intFromEnv('RELAY_PEER_PORT', RELAY_DEFAULTS.peerPort, env),
    peerHost: secret ? await discoverPeerHost(env, bind) : undefined,
    peerBind: env.RELAY_PEER_BIND?.trim() || undefined,
    healthPort: env.RELAY_HEALTH_PORT ? intFromEnv('RELAY_HEALTH_PORT', 0, env) : undefined,
    ...relayLimitsFromEnv(env),
    ...regionFromEnv(env),
    claims: claimsRouterFromEnv(store, env, env.RELAY_REGION?.trim() || env.AWS_REGION),
    ...(await directFromEnv(env, log)),
    heartbeatMs: env.RELAY_HEARTBEAT_MS ? intFromEnv('RELAY_HEARTBEAT_MS', 30_000, env) : undefined,
    publicAddress: env.RELAY_PUBLIC_HOST
      ? `${env.RELAY_PUBLIC_HOST}:${intFromEnv('RELAY_PUBLIC_PORT', RELAY_DEFAULTS.port, env)}`
      : undefined,
    log,
  });
  if (env.RELAY_PUBLIC_HOST)
    log.info('public address', { host: env.RELAY_PUBLIC_HOST, port: env.RELAY_PUBLIC_PORT });
  return { relay, store, graceMs: intFromEnv('RELAY_DRAIN_GRACE_MS', RELAY_DEFAULTS.drainGraceMs, env) };
}

/** Runs until SIGTERM/SIGINT, then drains and exits 0. */
export async function main(): Promise<void> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // A closed log pipe must not take the relay (and every splice on it) down.
  process.stdout.on('error', () => {});
  // Started by `rendezvous relay` (cli/relay-exec.ts): a launcher that dies takes the relay along.
  if (process.channel) {
    process.channel.unref();
    process.once('disconnect', () => process.exit(1));
  }
  // Records are written asynchronously, a batch per event-loop turn (relay/log-sink.ts).
  const out = stdoutSink();
  const log = jsonLog('relay', out);
  const { relay, store, graceMs } = await runRelayFromEnv(process.env, log);
  // On AWS the metrics leave as EMF lines on stdout (the awslogs driver carries them to CloudWatch),
  // through the same sink as the records, so the two never interleave within a line.
  const stopEmf =
    process.env.RENDEZVOUS_METRICS === 'emf'
      ? startEmfFlush(relay.metrics, process.env.RENDEZVOUS_METRICS_DIMENSION ?? 'rendezvous', 60_000, out)
      : undefined;
  const onSignal = (signal: string) => {
    log.info('stopping', { signal });
    void relay.drain(graceMs).then(() => {
      // The last minute's counts (the drain's refusals and ended rendezvous included).
      stopEmf?.();
      store.close();
      // Every record (the drain's included) reaches stdout before the process ends.
      void out.flush().then(() => process.exit(0));
    });
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
}

// Run only as the entry point itself (source or bundle), never when bundled into another entry.
if (
  /(relay[\\/]main\.ts|relay\.mjs)$/.test(process.argv[1] ?? '') &&
  import.meta.url === pathToFileURL(process.argv[1] ?? '').href
) {
  main().catch((err) => {
    process.stderr.write(`relay: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
