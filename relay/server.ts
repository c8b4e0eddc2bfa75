/**
 * One relay process: the generic-protocol listener, the HTTP-specific listener, the peer
 * listener (when in a cluster), the health endpoint, and the drain. Accept loops only start
 * sessions; a session's failure never reaches them.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer, type Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { encodeResponse } from '../core/http-head.js';
import { type Log, type RefusalLogGate, silentLog } from '../core/log.js';
import { encodeErrorLine } from '../core/relay-line.js';
import { splice } from '../core/splice.js';
import type { ConnectPolicy } from '../server/connect-auth.js';
import type { Metrics } from '../server/metrics/registry.js';
import type { Store } from '../server/store/index.js';
import type { RelayContext, SpliceFilters } from './context.js';
import { CookieCache } from './cookie-cache.js';
import { startHttpSession } from './http.js';
import { LastRendezvousWriter } from './last-rendezvous.js';
import { KnownNames, SplicesPerUuid, WaitingClients } from './limits.js';
import { type ParkOrigin, ParkRecords } from './park-records.js';
import { ParkingLot } from './parking.js';
import { startPeerListener } from './peer.js';
import { PeerPool, type PeerPoolOptions } from './peer-pool.js';
import { refuse } from './refuse.js';
import { startRevalidation } from './revalidate.js';
import { startSession } from './session.js';
import { RelayTelemetry, type RendezvousStart, type RendezvousSummary } from './telemetry.js';

/** Relay settings; every limit has a default. */
export interface RelayOptions {
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
  /** Listen address of the peer listener (default: `host`). */
  peerBind?: string;
  /** `GET /healthz` port (default: none). */
  healthPort?: number;
  handshakeTimeoutMs?: number;
  pairWaitMs?: number;
  maxParkedPerKey?: number;
  /** Period of the parked-cookie/identity re-check (default 10 s, jittered ±20%). */
  revalidateMs?: number;
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
  /** A splice with no byte either way for this long is ended (default 1 h; 0: never). */
  idleTimeoutMs?: number;
  /** HTTP-specific: `<id>.<httpDomain>` in a request's Host names hidden server `<id>` (default: off). */
  httpDomain?: string;
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
  /**
   * The generic protocol's public `host:port` (RELAY_PUBLIC_HOST/_PORT), shown by the operator
   * console; default: the listen address when it is a specific one.
   */
  publicAddress?: string;
  /** The table's home replica, where CONNECT codes are claimed (see RENDEZVOUS_HOME_REGION). */
  home?: Store;
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
}

/** Relay defaults, named so the CLI and docs can show them. */
export const RELAY_DEFAULTS = {
  port: 8899,
  httpPort: 8898,
  peerPort: 8897,
  handshakeTimeoutMs: 10_000,
  pairWaitMs: 5_000,
  maxParkedPerKey: 64,
  revalidateMs: 10_000,
  keepAliveMs: 60_000,
  maxHandshakesPerSource: 64,
  maxHandshakes: 10_000,
  maxWaitingPerSource: 128,
  maxWaiting: 10_000,
  maxSplicesPerUuid: 100,
  // An hour: an interactive session left idle (a shell, a database console) survives a long
  // meeting; TCP keepalive (keepAliveMs) already keeps the NLB's 350 s flow timeout from cutting
  // it, so this bound is the relay's own and only ends rendezvous nobody uses.
  idleTimeoutMs: 3_600_000,
  drainGraceMs: 60_000,
} as const;

/** Share of the descriptor limit kept free of client connections (store, health, peers, logs). */
export const FD_HEADROOM_SHARE = 0.2;

/** The soft limit on open descriptors (Linux /proc), or undefined where it cannot be read. */
export function readFdLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

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

function listen(
  server: Server | ReturnType<typeof createHttpServer>,
  port: number,
  host: string,
): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Starts a relay. */
export async function startRelay(opts: RelayOptions): Promise<Relay> {
  const log = opts.log ?? silentLog;
  const host = opts.host ?? '127.0.0.1';
  const origin: ParkOrigin = { region: opts.region || undefined, httpUrl: opts.httpPublicUrl || undefined };
  // Every relay keeps each uuid's last rendezvous for the console (relay/last-rendezvous.ts).
  const lastRendezvous = new LastRendezvousWriter(opts.store, origin, log);
  const onEnd = opts.onRendezvousEnd;
  opts = {
    ...opts,
    onRendezvousEnd: (s) => {
      lastRendezvous.note(s);
      onEnd?.(s);
    },
  };
  const relayId = randomUUID();
  const keepAliveMs = opts.keepAliveMs ?? RELAY_DEFAULTS.keepAliveMs;
  let splices = 0;
  let draining = false;
  const countSplice = (delta: 1 | -1) => {
    splices += delta;
  };
  const telemetry = new RelayTelemetry({
    relayId,
    log,
    metrics: opts.metrics,
    gate: opts.refusalLog,
    onRendezvousEnd: opts.onRendezvousEnd,
    draining: () => draining,
  });

  let records: ParkRecords | undefined;
  const lot = new ParkingLot(opts.maxParkedPerKey ?? RELAY_DEFAULTS.maxParkedPerKey, {
    onCount: (kind, key, count) => records?.onCount(kind, key, count),
  });
  const sockets = new Set<Socket>();
  const closers: Array<() => Promise<void>> = [];
  // Shared listeners, not closures per socket: a parked socket holds as little as it can.
  const untrack = function (this: Socket) {
    sockets.delete(this);
  };
  const destroyOnError = function (this: Socket) {
    this.destroy();
  };
  const track = (socket: Socket) => {
    sockets.add(socket);
    // on, not once: once wraps the listener in a closure per socket ('close' comes once anyway).
    socket.on('close', untrack);
    socket.setNoDelay(true);
    socket.on('error', destroyOnError);
  };
  // TCP keepalive (two setsockopt calls, a tenth of a pairing's CPU here) only on sockets that
  // can sit idle long enough for the NLB to forget them: parked sockets at once, spliced mobile
  // sockets once per KEEPALIVE sweep (a splice of seconds never pays for it). A splice's first
  // probe then comes at most keepAliveMs/2 + keepAliveMs after its start, far below 350 s.
  const keepAlive = (socket: Socket) => socket.setKeepAlive(true, keepAliveMs);
  const keepAliveLater = new Set<Duplex>();
  const keepAliveSweep = setInterval(
    () => {
      for (const s of keepAliveLater) if (s instanceof Socket && !s.destroyed) keepAlive(s);
      keepAliveLater.clear();
    },
    Math.max(1_000, keepAliveMs / 2),
  );
  keepAliveSweep.unref();

  const limitLog = telemetry.limitLog;
  const perUuid = new SplicesPerUuid(opts.maxSplicesPerUuid ?? RELAY_DEFAULTS.maxSplicesPerUuid);
  const idleTimeoutMs = opts.idleTimeoutMs ?? RELAY_DEFAULTS.idleTimeoutMs;
  const spliceHidden = (
    hidden: Duplex,
    mobile: Duplex,
    rendezvous: RendezvousStart,
    filters: SpliceFilters = {},
  ) => {
    countSplice(1);
    const release = perUuid.add(rendezvous.uuid);
    keepAliveLater.add(mobile);
    splice(
      hidden,
      mobile,
      (end) => {
        keepAliveLater.delete(mobile);
        release();
        countSplice(-1);
        telemetry.ended(rendezvous, end);
      },
      {
        countBytes: true,
        idleMs: idleTimeoutMs,
        onIdle: () =>
          log.info('idle splice ended', { rid: rendezvous.rid, uuid: rendezvous.uuid, idleTimeoutMs }),
        intoA: filters.intoHidden,
        intoB: filters.intoMobile,
      },
    );
  };
  // The descriptor ceiling: past it the kernel's accept fails and libuv resets new connections
  // silently, and /healthz and the store's connections fail too. So the relay stops short of it,
  // keeping FD_HEADROOM_SHARE of the limit for itself, and says so on the wire and in the log.
  const fdLimit = opts.fdLimit === undefined ? readFdLimit() : opts.fdLimit;
  const maxClientSockets = fdLimit ? Math.floor(fdLimit * (1 - FD_HEADROOM_SHARE)) - 16 : undefined;
  const atCeiling = (socket: Socket, protocol: 'generic' | 'http') => {
    if (maxClientSockets === undefined || sockets.size <= maxClientSockets) return false;
    telemetry.refused('at_capacity', {
      protocol,
      source: socket.remoteAddress,
      open: sockets.size,
      fdLimit,
    });
    return true;
  };
  // At the ceiling a refusal must free its descriptor at once (no linger): answer, then close.
  const shed = (socket: Socket, answer: Buffer) => {
    socket.end(answer);
    socket.once('finish', () => socket.destroy());
    setTimeout(() => socket.destroy(), 1_000).unref();
  };
  // Accept failures (EMFILE/ENFILE at the descriptor ceiling) are logged at a bounded rate, not per attempt.
  const onListenerError = (listener: string) => (err: NodeJS.ErrnoException) => {
    if (err.code === 'EMFILE' || err.code === 'ENFILE')
      limitLog.hit('file descriptors', { listener, code: err.code });
    else log.error('listener error', { listener, error: err.message });
  };

  let peerAddress: AddressInfo | undefined;
  const pool = opts.clusterSecret ? new PeerPool(opts.clusterSecret, opts.peerPool) : undefined;
  let peerSockets: Set<Socket> | undefined;
  if (opts.clusterSecret) {
    const peer = await startPeerListener({
      port: opts.peerPort ?? RELAY_DEFAULTS.peerPort,
      host: opts.peerBind ?? host,
      secret: opts.clusterSecret,
      lot,
      log,
      perUuid,
      spliceHidden,
      telemetry,
      relayId,
      onError: onListenerError('peer'),
    });
    peerAddress = peer.server.address() as AddressInfo;
    peerSockets = peer.sockets;
    closers.push(() => new Promise((r) => peer.server.close(() => r())));
    const peerHost = opts.peerHost ?? (host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host);
    records = new ParkRecords(opts.store, relayId, `${peerHost}:${peer.port}`, log, undefined, origin);
  } else {
    // A relay alone still records its parks (the operator console shows who is online); with no
    // peer address, no other relay will try to dial it.
    records = new ParkRecords(opts.store, relayId, '', log, undefined, origin);
  }
  records.start(lot);
  telemetry.watch(
    (kind) => lot.sizeOf(kind),
    () => splices,
  );

  // Handshake admission: a flood from one address (or from everywhere) is refused at once,
  // before it costs a timer, a decoder or a store read.
  const maxPerSource = opts.maxHandshakesPerSource ?? RELAY_DEFAULTS.maxHandshakesPerSource;
  const maxTotal = opts.maxHandshakes ?? RELAY_DEFAULTS.maxHandshakes;
  let handshaking = 0;
  const perSource = new Map<string, number>();
  // While fewer than maxPerSource connections are in handshake in all, no source can be at its
  // limit, so a connection's source (a getpeername call) is not looked up: it waits in `unsourced`
  // and is counted only if the total grows that far. Exact whenever the limit can bite.
  interface Admission {
    socket: Socket;
    source?: string;
  }
  const unsourced = new Set<Admission>();
  const countSource = (a: Admission) => {
    a.source = a.socket.remoteAddress ?? '?';
    perSource.set(a.source, (perSource.get(a.source) ?? 0) + 1);
  };
  const admit: RelayContext['admit'] = (socket) => {
    if (handshaking >= maxTotal) {
      return { ok: false, reason: 'too many connections in handshake, try again' };
    }
    const a: Admission = { socket };
    if (handshaking + 1 >= maxPerSource) {
      for (const other of unsourced) countSource(other);
      unsourced.clear();
      const source = socket.remoteAddress ?? '?';
      if ((perSource.get(source) ?? 0) >= maxPerSource) {
        return { ok: false, reason: 'too many connections in handshake from your address' };
      }
      countSource(a);
    } else unsourced.add(a);
    handshaking++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      // Nothing of the handshake stays on a socket that goes on to park.
      socket.off('close', release);
      handshaking--;
      if (a.source === undefined) {
        unsourced.delete(a);
        return;
      }
      const n = (perSource.get(a.source) ?? 1) - 1;
      if (n <= 0) perSource.delete(a.source);
      else perSource.set(a.source, n);
    };
    socket.once('close', release);
    return { ok: true, release };
  };
  const cookies = new CookieCache(opts.store);
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
    admit,
    countSplice,
    httpDomain: opts.httpDomain || undefined,
    regions: origin.region
      ? {
          region: origin.region,
          others: (kind, key) => records.others(kind, key),
          elsewhere: (kind, key) => records.elsewhere(kind, key),
        }
      : undefined,
    home: opts.home,
    waiting: new WaitingClients(
      opts.maxWaitingPerSource ?? RELAY_DEFAULTS.maxWaitingPerSource,
      opts.maxWaiting ?? RELAY_DEFAULTS.maxWaiting,
    ),
    perUuid,
    names: new KnownNames(opts.store),
    limitLog,
    spliceHidden,
    keepAlive,
  };

  // allowHalfOpen: a peer's FIN must not end our write side; it is forwarded as a half-close.
  const generic = createServer({ allowHalfOpen: true }, (socket) => {
    track(socket);
    if (atCeiling(socket, 'generic')) return shed(socket, encodeErrorLine('relay at capacity, try again'));
    startSession(socket, ctx);
  });
  generic.on('error', onListenerError('generic'));
  const address = await listen(generic, opts.port ?? RELAY_DEFAULTS.port, host);
  const specific = host !== '0.0.0.0' && host !== '::';
  origin.address = opts.publicAddress || (specific ? `${host}:${address.port}` : undefined);
  closers.push(() => new Promise((r) => generic.close(() => r())));

  let httpAddress: AddressInfo | undefined;
  if (opts.httpPort !== undefined) {
    const http = createServer({ allowHalfOpen: true }, (socket) => {
      track(socket);
      if (atCeiling(socket, 'http')) {
        const body = { permanent: false, diagnostic: 'relay at capacity, try again' };
        return shed(socket, encodeResponse(503, { 'Retry-After': '1' }, body));
      }
      startHttpSession(socket, ctx);
    });
    http.on('error', onListenerError('http'));
    httpAddress = await listen(http, opts.httpPort, host);
    origin.httpAddress = opts.httpPublicUrl || (specific ? `http://${host}:${httpAddress.port}` : undefined);
    closers.push(() => new Promise((r) => http.close(() => r())));
  }

  let healthAddress: AddressInfo | undefined;
  if (opts.healthPort !== undefined) {
    const health = createHttpServer((req, res) => {
      if (req.url === '/metrics') {
        // Prometheus text exposition, for anyone running relays outside AWS.
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4', connection: 'close' });
        res.end(telemetry.metrics.prometheus());
        return;
      }
      const ok = req.url === '/healthz' || req.url?.startsWith('/healthz?');
      // The bench's "what a parked socket holds" figure: under --expose-gc (never in production),
      // `/healthz?gc` collects garbage first, so RSS shows live memory, not GC timing.
      const gc = (globalThis as { gc?: () => void }).gc;
      if (ok && req.url === '/healthz?gc' && gc) gc();
      const status = !ok ? 404 : draining ? 503 : 200;
      res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
      res.end(
        // pid: the bench reads this process's RSS (behind `rendezvous relay` it is the launcher's child).
        JSON.stringify(
          ok
            ? { ok: !draining, relayId, parked: lot.size, splices, pid: process.pid }
            : { error: 'not found' },
        ),
      );
    });
    healthAddress = await listen(health, opts.healthPort, host);
    health.on('error', onListenerError('health'));
    closers.push(
      () =>
        new Promise((r) => {
          health.close(() => r());
          health.closeAllConnections();
        }),
    );
  }

  // Revocations (rotation, disable, replacement) reach sockets parked before them.
  const revalidation = startRevalidation({
    store: opts.store,
    lot,
    cookies,
    log,
    refuseGeneric: (p, reason) => {
      telemetry.refused('revoked', { protocol: 'generic', uuid: p.uuid });
      refuse(p.socket, reason);
    },
    periodMs: opts.revalidateMs ?? RELAY_DEFAULTS.revalidateMs,
  });

  log.info('relay listening', {
    relayId,
    generic: `${address.address}:${address.port}`,
    http: httpAddress ? `${httpAddress.address}:${httpAddress.port}` : undefined,
    peer: records?.peer,
    health: healthAddress ? `${healthAddress.address}:${healthAddress.port}` : undefined,
  });

  let drained: Promise<void> | undefined;
  const drain = (graceMs: number = RELAY_DEFAULTS.drainGraceMs): Promise<void> => {
    drained ??= (async () => {
      draining = true;
      revalidation.stop();
      clearInterval(keepAliveSweep);
      pool?.close();
      log.info('draining', { parked: lot.size, splices, graceMs });
      const listenersClosed = Promise.all(closers.map((c) => c()));
      const cut = { generic: 0, http: 0 };
      for (const p of lot.drainAll()) {
        cut[p.kind]++;
        if (p.kind === 'generic') refuse(p.socket, 'relay shutting down');
        else p.socket.destroy();
      }
      // One record per protocol for the lot (`parked`: how many), not one per parked socket.
      for (const protocol of ['generic', 'http'] as const)
        if (cut[protocol] > 0)
          telemetry.refused('draining', { protocol, parked: cut[protocol] }, cut[protocol]);
      await records?.removeAll();
      records?.stop();
      // Let the -ERR lines reach the parked hidden servers before anything is cut.
      await new Promise((r) => setTimeout(r, 100));
      const until = Date.now() + graceMs;
      while (splices > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      for (const s of sockets) s.destroy();
      for (const s of peerSockets ?? []) s.destroy();
      await listenersClosed;
      // After the splices: the rendezvous they ended are written too.
      await lastRendezvous.close();
      log.info('drained', { cut: splices });
    })();
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
    get splices() {
      return splices;
    },
    get draining() {
      return draining;
    },
    drain,
    close: () => drain(0),
  };
}
