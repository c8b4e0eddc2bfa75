/**
 * One relay process, wired together: the generic-protocol listener, the HTTP-specific listener,
 * the peer listener (when in a cluster), the health port, and the drain. Each part is its own
 * module (admission, capacity, health, drain, splices, sessions); this file only builds and
 * connects them. Accept loops only start sessions; a session's failure never reaches them.
 */

import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { createServer, type Socket } from 'node:net';
import { type Log, type RefusalLogGate, silentLog } from '../core/log.js';
import type { ClaimsRouter } from '../server/claims.js';
import type { ConnectPolicy } from '../server/connect-auth.js';
import type { Metrics } from '../server/metrics/registry.js';
import type { Store } from '../server/store/index.js';
import { HandshakeAdmission } from './admission.js';
import type { BandwidthRelayOptions } from './bandwidth.js';
import { ClientSockets, listenerErrors } from './capacity.js';
import type { RelayContext } from './context.js';
import { CookieCache } from './cookie-cache.js';
import { RELAY_DEFAULTS } from './defaults.js';
import { drainRelay } from './drain.js';
import { startHealthServer } from './health.js';
import { startHttpSession } from './http.js';
import { identityUsage } from './identity-usage.js';
import { KeepAlive } from './keepalive.js';
import { LastRendezvousWriter } from './last-rendezvous.js';
import { KnownNames, SplicesPerUuid, WaitingClients } from './limits.js';
import { directAddress, listen } from './listen.js';
import type { Meter } from './metering.js';
import { type ParkOrigin, ParkRecords } from './park-records.js';
import { ParkingLot } from './parking.js';
import { defaultPeerBind, MAX_PEER_HANDSHAKES, startPeerListener } from './peer-listener.js';
import { PeerPool, type PeerPoolOptions } from './peer-pool.js';
import { refuse } from './refuse.js';
import { type Revalidation, startRevalidation } from './revalidate.js';
import { startSession } from './session.js';
import { setOnListener } from './socket-options.js';
import { Splices } from './splices.js';
import { RelayTelemetry, type RendezvousSummary } from './telemetry.js';

/** Relay settings; every limit has a default. */
export interface RelayOptions extends BandwidthRelayOptions {
  store: Store;
  /** Generic-protocol port (default 8899; 0 picks one). */
  port?: number;
  /** HTTP-specific port (default: none). */
  httpPort?: number;
  /** Listen address of the public listeners (default 127.0.0.1). */
  host?: string;
  /** Cluster: secret shared by all relays; without it the relay runs alone. */
  clusterSecret?: string;
  /** Cluster: peer listener port (0 picks one) and the address other relays dial. */
  peerPort?: number;
  peerHost?: string;
  /**
   * Listen address of the peer listener (default: `peerHost` when it is an address of this
   * machine, else `host`).
   */
  peerBind?: string;
  /**
   * Peer-port connections still in their handshake at once (default 256, and never more than a
   * quarter of the connections the descriptor ceiling allows).
   */
  maxPeerHandshakes?: number;
  /**
   * For this long after the start, peer lines naming no destination relay (the previous
   * release's, during a rolling deploy) are accepted; then refused (default 15 min; 0: never).
   */
  peerUnboundGraceMs?: number;
  /** `GET /healthz` port (default: none). */
  healthPort?: number;
  handshakeTimeoutMs?: number;
  pairWaitMs?: number;
  maxParkedPerKey?: number;
  /** Period of the parked-cookie/identity re-check (default 10 s, jittered ±20%). */
  revalidateMs?: number;
  /** How long a change notice's uuid is re-checked each round (default 30 s; tests shorten it). */
  noticeWindowMs?: number;
  /** Connections still in their handshake, from one source address (default 64) and in all (default 10,000). */
  maxHandshakesPerSource?: number;
  maxHandshakes?: number;
  /** TCP keepalive on accepted sockets, below the NLB's 350 s idle timeout. */
  keepAliveMs?: number;
  /** Mobile clients waiting for a hidden server to park, from one source address (default 128) and in all (default 10,000). */
  maxWaitingPerSource?: number;
  maxWaiting?: number;
  /** Live splices per hidden server (uuid) on this relay (default 100). */
  maxSplicesPerUuid?: number;
  /** Live splices per hidden server from one source address (IPv6: /64) on this relay (default 16). */
  maxSplicesPerSource?: number;
  /** A splice with no byte either way for this long is ended (default 1 h; 0: never). */
  idleTimeoutMs?: number;
  /** HTTP-specific: `<id>.<httpDomain>` in a request's Host names hidden server `<id>` (default: off). */
  httpDomain?: string;
  /**
   * HTTP-specific, with `httpDomain`: the parent name still serves tenants named by `?rendezvous=`,
   * Digest or Basic, one origin shared by all (unsafe for browsers; default: off, refused with 403).
   */
  httpSharedOrigin?: boolean;
  /** The descriptor limit to stay below (default: the process's soft limit; 0: none). */
  fdLimit?: number;
  connectPolicy?: ConnectPolicy;
  /**
   * Multi-region: this relay's region (RELAY_REGION) and its region's public HTTP-specific URL
   * (RELAY_HTTP_PUBLIC_URL), written into park records; HTTP requests for a hidden server parked
   * only in another region are redirected there. Without a region, no redirects.
   */
  region?: string;
  httpPublicUrl?: string;
  /** How often the relay writes its heartbeat to the store (default 20 s; tests shorten it). */
  heartbeatMs?: number;
  /**
   * The generic protocol's public `host:port` (RELAY_PUBLIC_HOST/_PORT), shown by the operator
   * console; default: the listen address when it is a specific one.
   */
  publicAddress?: string;
  /**
   * Direct addressing (RELAY_DIRECT_HOST/_PORT): the host (and port; default: the generic
   * listener's) at which mobile clients reach this relay itself, bypassing the front. Written into
   * its generic park records, so look-ups name this relay for the hidden servers it holds.
   */
  directHost?: string;
  directPort?: number;
  /** The table's home replica, where CONNECT codes are claimed (see RENDEZVOUS_HOME_REGION). */
  home?: Store;
  /** Where CONNECT codes are claimed, followed per request (server/claims.ts); overrides `home`. */
  claims?: ClaimsRouter;
  /** Cluster: bounds of the pool of idle links to other relays. */
  peerPool?: PeerPoolOptions;
  log?: Log;
  /**
   * Called once per rendezvous at its end, by the relay holding the hidden server's socket (the
   * console's "last rendezvous" writer listens here).
   */
  onRendezvousEnd?: (summary: RendezvousSummary) => void;
  /** The metrics registry (default: a new one; `relay.metrics`, `GET /metrics`). */
  metrics?: Metrics;
  /** The refusal log's budgets (default: 20 records a minute per reason and source address, 100 per reason). */
  refusalLog?: RefusalLogGate;
  /** Usage per identity (relay/metering.ts): on unless false; flushed every `flushMs` (default 60 s). */
  metering?: false | { flushMs?: number };
}

/** Relay defaults (relay/defaults.ts), named so the CLI and docs can show them. */
export { RELAY_DEFAULTS };

/** A running relay. */
export interface Relay {
  /** Generic-protocol address. */
  address: AddressInfo;
  httpAddress?: AddressInfo;
  peerAddress?: AddressInfo;
  healthAddress?: AddressInfo;
  relayId: string;
  lot: ParkingLot;
  /** This relay's park records in the store (and where agents' target reports go: `noteTarget`). */
  records: ParkRecords;
  /** The metrics registry behind `GET /metrics` and EMF. */
  metrics: Metrics;
  /** Cluster: idle links to other relays. */
  peerPool?: PeerPool;
  /** Usage per identity (absent when metering is off). */
  meter?: Meter;
  /** Live splices. */
  readonly splices: number;
  readonly draining: boolean;
  /**
   * Stops accepting, tells parked hidden servers `-ERR relay shutting down` (so they re-park
   * elsewhere), removes this relay's park records, lets live splices run up to `graceMs`, then
   * ends what is left.
   */
  drain(graceMs?: number): Promise<void>;
  /** Drain with no grace. */
  close(): Promise<void>;
}

/** Starts a relay. */
export async function startRelay(opts: RelayOptions): Promise<Relay> {
  const log = opts.log ?? silentLog;
  const host = opts.host ?? '127.0.0.1';
  const origin: ParkOrigin = { region: opts.region || undefined, httpUrl: opts.httpPublicUrl || undefined };
  // Every relay keeps each uuid's last rendezvous for the console (relay/last-rendezvous.ts).
  const lastRendezvous = new LastRendezvousWriter({ store: opts.store, origin, log });
  const onEnd = opts.onRendezvousEnd;
  const relayId = randomUUID();
  let draining = false;
  const telemetry = new RelayTelemetry({
    relayId,
    log,
    metrics: opts.metrics,
    gate: opts.refusalLog,
    onRendezvousEnd: (s) => {
      lastRendezvous.note(s);
      onEnd?.(s);
    },
    draining: () => draining,
  });

  let records: ParkRecords | undefined;
  let revalidation: Revalidation | undefined;
  const lot = new ParkingLot(opts.maxParkedPerKey ?? RELAY_DEFAULTS.maxParkedPerKey, {
    onCount: (kind, key, count) => {
      records?.onCount(kind, key, count);
      revalidation?.onCount(kind, key, count);
    },
  });
  const clients = new ClientSockets(telemetry, opts.fdLimit);
  const onListenerError = listenerErrors(telemetry, log);
  const closers: Array<() => Promise<void>> = [];
  const keepAlive = new KeepAlive(opts.keepAliveMs ?? RELAY_DEFAULTS.keepAliveMs);
  const perUuid = new SplicesPerUuid(
    opts.maxSplicesPerUuid ?? RELAY_DEFAULTS.maxSplicesPerUuid,
    opts.maxSplicesPerSource ?? RELAY_DEFAULTS.maxSplicesPerSource,
    (uuid) => identityLimits.peek(uuid)?.maxConcurrent, // read at pairings, after it is made
  );
  const idleTimeoutMs = opts.idleTimeoutMs ?? RELAY_DEFAULTS.idleTimeoutMs;
  const { meter, identityLimits, bandwidth } = identityUsage(opts, relayId, log);
  const splices = new Splices({ perUuid, keepAlive, idleTimeoutMs, telemetry, log, meter, bandwidth });

  let peerAddress: AddressInfo | undefined;
  const pool = opts.clusterSecret ? new PeerPool(opts.clusterSecret, opts.peerPool) : undefined;
  let peerSockets: Set<Socket> | undefined;
  let recordedPeer = '';
  if (opts.clusterSecret) {
    const peerHost = opts.peerHost ?? (host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host);
    const peerBind = opts.peerBind || defaultPeerBind(peerHost, host);
    if (peerBind !== peerHost && (peerBind === '0.0.0.0' || peerBind === '::') && !opts.peerBind)
      log.warn('peer port open on every address', {
        peerHost,
        hint: 'the address other relays dial is not one of this machine’s: set RELAY_PEER_BIND',
      });
    const peer = await startPeerListener({
      port: opts.peerPort ?? RELAY_DEFAULTS.peerPort,
      host: peerBind,
      // Peer links are few and long-lived (pooled): their options are set per link.
      accept: (link) => {
        link.setNoDelay(true);
        return clients.accept(link, 'peer');
      },
      maxHandshakes: Math.min(
        opts.maxPeerHandshakes ?? MAX_PEER_HANDSHAKES,
        clients.ceilingShare(0.25) ?? Number.POSITIVE_INFINITY,
      ),
      secret: opts.clusterSecret,
      lot,
      log,
      perUuid,
      spliceHidden: splices.spliceHidden,
      telemetry,
      relayId,
      unboundGraceMs: opts.peerUnboundGraceMs ?? RELAY_DEFAULTS.peerUnboundGraceMs,
      onError: onListenerError('peer'),
    });
    peerAddress = peer.server.address() as AddressInfo;
    peerSockets = peer.sockets;
    closers.push(() => new Promise((r) => peer.server.close(() => r())));
    recordedPeer = `${peerHost}:${peer.port}`;
  }
  // A relay alone still records its parks (the operator console shows who is online); with no
  // peer address, no other relay will try to dial it.
  records = new ParkRecords({
    store: opts.store,
    relayId,
    peer: recordedPeer,
    log,
    origin,
    heartbeatMs: opts.heartbeatMs,
  });
  // The first heartbeat before any park: a relay without one counts as dead to every reader.
  await records.start(lot);
  telemetry.watch(
    (kind) => lot.sizeOf(kind),
    () => splices.count,
  );

  const admission = new HandshakeAdmission(
    opts.maxHandshakesPerSource ?? RELAY_DEFAULTS.maxHandshakesPerSource,
    opts.maxHandshakes ?? RELAY_DEFAULTS.maxHandshakes,
  );
  const cookies = new CookieCache(opts.store);
  // Revocations (rotation, disable, replacement, expiry) reach sockets parked before them.
  revalidation = startRevalidation({
    store: opts.store,
    lot,
    cookies,
    log,
    refuseGeneric: (p, reason, why = 'revoked') => {
      telemetry.refused(why, { protocol: 'generic', uuid: p.uuid });
      refuse(p.socket, reason);
    },
    live: splices,
    limits: identityLimits,
    periodMs: opts.revalidateMs ?? RELAY_DEFAULTS.revalidateMs,
    noticeWindowMs: opts.noticeWindowMs,
  });
  const ctx: RelayContext = {
    store: opts.store,
    cookies,
    lot,
    cluster: records && opts.clusterSecret ? { records, secret: opts.clusterSecret, pool } : undefined,
    limits: {
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? RELAY_DEFAULTS.handshakeTimeoutMs,
      pairWaitMs: opts.pairWaitMs ?? RELAY_DEFAULTS.pairWaitMs,
      idleTimeoutMs,
    },
    connectPolicy: opts.connectPolicy ?? {},
    log,
    records,
    telemetry,
    relayId,
    admit: (socket) => admission.admit(socket),
    httpDomain: opts.httpDomain || undefined,
    httpSharedOrigin: opts.httpSharedOrigin === true,
    regions: origin.region
      ? {
          region: origin.region,
          others: (kind, key) => records.others(kind, key),
          elsewhere: (kind, key) => records.elsewhere(kind, key),
        }
      : undefined,
    home: opts.home,
    claims: opts.claims,
    waiting: new WaitingClients(
      opts.maxWaitingPerSource ?? RELAY_DEFAULTS.maxWaitingPerSource,
      opts.maxWaiting ?? RELAY_DEFAULTS.maxWaiting,
    ),
    perUuid,
    // Real identities only: made-up names must not push real ones out of the limits cache.
    names: new KnownNames(opts.store, Date.now, (uuid, id) => id && identityLimits.prime(uuid, id.limits)),
    identityLimits,
    spliceHidden: splices.spliceHidden,
    meter,
    // A parked socket that got keepalive from its listener needs no call of its own.
    keepAlive: (socket) => {
      if (perSocketOptions) keepAlive.now(socket);
    },
  };

  // No-delay and keepalive come from the listeners where the kernel passes them on
  // (relay/socket-options.ts); otherwise each accepted socket gets its own calls.
  let perSocketOptions = false;
  const keepAliveMs = opts.keepAliveMs ?? RELAY_DEFAULTS.keepAliveMs;
  // allowHalfOpen: a peer's FIN must not end our write side; it is forwarded as a half-close.
  const generic = createServer({ allowHalfOpen: true }, (socket) => {
    if (perSocketOptions) socket.setNoDelay(true);
    if (clients.accept(socket, 'generic')) startSession(socket, ctx);
  });
  generic.on('error', onListenerError('generic'));
  const address = await listen(generic, opts.port ?? RELAY_DEFAULTS.port, host);
  if (!setOnListener(generic, keepAliveMs)) perSocketOptions = true;
  const specific = host !== '0.0.0.0' && host !== '::';
  origin.address = opts.publicAddress || (specific ? `${host}:${address.port}` : undefined);
  if (opts.directHost) origin.direct = directAddress(opts.directHost, opts.directPort ?? address.port, log);
  closers.push(() => new Promise((r) => generic.close(() => r())));

  let httpAddress: AddressInfo | undefined;
  if (opts.httpPort !== undefined) {
    const http = createServer({ allowHalfOpen: true }, (socket) => {
      if (perSocketOptions) socket.setNoDelay(true);
      if (clients.accept(socket, 'http')) startHttpSession(socket, ctx);
    });
    http.on('error', onListenerError('http'));
    httpAddress = await listen(http, opts.httpPort, host);
    if (!setOnListener(http, keepAliveMs)) perSocketOptions = true;
    origin.httpAddress = opts.httpPublicUrl || (specific ? `http://${host}:${httpAddress.port}` : undefined);
    closers.push(() => new Promise((r) => http.close(() => r())));
  }

  let healthAddress: AddressInfo | undefined;
  if (opts.healthPort !== undefined) {
    const health = await startHealthServer({
      port: opts.healthPort,
      host,
      metrics: telemetry.metrics,
      extraMetrics: meter ? () => meter.prometheus() : undefined,
      state: () => ({ draining, relayId, parked: lot.size, splices: splices.count }),
      onError: onListenerError('health'),
    });
    healthAddress = health.address;
    closers.push(health.close);
  }

  log.info('relay listening', {
    relayId,
    generic: `${address.address}:${address.port}`,
    http: httpAddress ? `${httpAddress.address}:${httpAddress.port}` : undefined,
    // A relay alone has no peer port: no `peer` field at all rather than an empty one.
    peer: records?.peer || undefined,
    peerBind: peerAddress ? `${peerAddress.address}:${peerAddress.port}` : undefined,
    health: healthAddress ? `${healthAddress.address}:${healthAddress.port}` : undefined,
  });

  let drained: Promise<void> | undefined;
  const drain = (graceMs: number = RELAY_DEFAULTS.drainGraceMs): Promise<void> => {
    if (!drained) {
      draining = true;
      drained = drainRelay(
        {
          log,
          lot,
          records,
          telemetry,
          stopBackground: () => {
            revalidation?.stop();
            keepAlive.stop();
            pool?.close();
          },
          closeListeners: () => Promise.all(closers.map((c) => c())).then(() => {}),
          splices: () => splices.count,
          cutConnections: () => {
            clients.destroyAll();
            for (const s of peerSockets ?? []) s.destroy();
          },
          // After the splices: the rendezvous they ended are written too, and their usage.
          flush: () => Promise.all([lastRendezvous.close(), meter?.close()]).then(() => {}),
        },
        graceMs,
      );
    }
    return drained;
  };

  return {
    address,
    httpAddress,
    peerAddress,
    healthAddress,
    relayId,
    lot,
    records,
    metrics: telemetry.metrics,
    peerPool: pool,
    meter,
    get splices() {
      return splices.count;
    },
    get draining() {
      return draining;
    },
    drain,
    close: () => drain(0),
  };
}
