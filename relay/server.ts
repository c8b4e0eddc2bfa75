/**
 * The relay's listener for the generic protocol. The accept loop only starts sessions; a
 * session's failure never reaches it. Parked cookies are re-checked against the store
 * periodically, so a registration made elsewhere (another relay, the API) still evicts
 * sockets parked with the cookie it replaced.
 */

import type { AddressInfo } from 'node:net';
import { createServer, type Server, type Socket } from 'node:net';
import { isRendezvousError } from '../core/errors.js';
import { type Log, silentLog } from '../core/log.js';
import { ParkingLot } from './pairing.js';
import { type CookieResolver, startSession } from './session.js';

/** Relay settings; every limit has a default. */
export interface RelayOptions {
  store: CookieResolver;
  port?: number;
  host?: string;
  /** Deadline for the cookie line (default 10 s). */
  handshakeTimeoutMs?: number;
  /** How long a mobile client waits for a parked socket (default 5 s). */
  pairWaitMs?: number;
  /** Parked sockets per cookie (default 64). */
  maxParkedPerCookie?: number;
  /** Period of the parked-cookie re-check (default 10 s). */
  revalidateMs?: number;
  log?: Log;
}

/** Relay defaults, named so the CLI and docs can show them. */
export const RELAY_DEFAULTS = {
  port: 8899,
  handshakeTimeoutMs: 10_000,
  pairWaitMs: 5_000,
  maxParkedPerCookie: 64,
  revalidateMs: 10_000,
} as const;

/** A running relay. */
export interface Relay {
  address: AddressInfo;
  lot: ParkingLot;
  /** Refuses parked and waiting sockets, stops listening and ends live splices. */
  close(): Promise<void>;
}

/** Starts the generic-protocol relay. */
export async function startRelay(opts: RelayOptions): Promise<Relay> {
  const log = opts.log ?? silentLog;
  const lot = new ParkingLot(
    {
      pairWaitMs: opts.pairWaitMs ?? RELAY_DEFAULTS.pairWaitMs,
      maxParkedPerCookie: opts.maxParkedPerCookie ?? RELAY_DEFAULTS.maxParkedPerCookie,
    },
    log,
  );
  const limits = { handshakeTimeoutMs: opts.handshakeTimeoutMs ?? RELAY_DEFAULTS.handshakeTimeoutMs };
  const sockets = new Set<Socket>();
  // allowHalfOpen: a peer's FIN must not end our write side; it is forwarded as a half-close.
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    startSession(socket, opts.store, lot, limits, log);
  });
  server.on('error', (err) => log.error('listener error', { error: err.message }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? RELAY_DEFAULTS.port, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });

  let checking = false;
  const revalidate = setInterval(async () => {
    if (checking) return;
    checking = true;
    try {
      for (const cookie of lot.parkedCookies()) {
        try {
          await opts.store.resolveCookie(cookie);
        } catch (err) {
          // A dead store is not a reason to drop parked servers; only a definite "no" is.
          if (isRendezvousError(err) && err.code.startsWith('COOKIE_')) lot.evict(cookie, err.message);
        }
      }
    } finally {
      checking = false;
    }
  }, opts.revalidateMs ?? RELAY_DEFAULTS.revalidateMs);
  revalidate.unref();

  const address = server.address() as AddressInfo;
  log.info('relay listening', { host: address.address, port: address.port });
  return {
    address,
    lot,
    close: async () => {
      clearInterval(revalidate);
      lot.evictAll('relay shutting down');
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) if (!s.writableEnded) s.destroy();
      setTimeout(() => {
        for (const s of sockets) s.destroy();
      }, 100).unref();
      await closed;
    },
  };
}
