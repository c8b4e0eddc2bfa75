/** What every listener of one relay process shares. */
import type { Socket } from 'node:net';
import type { Log } from '../core/log.js';
import type { ConnectPolicy } from '../core/registration.js';
import type { Store } from '../core/store.js';
import type { CookieCache } from './cookie-cache.js';
import type { ClusterLink } from './pairing.js';
import type { ParkingLot } from './parking.js';

/** Per-connection limits. */
export interface RelayLimits {
  /** Time from accept to a complete cookie line or request head. */
  handshakeTimeoutMs: number;
  /** How long a mobile client waits for a parked socket. */
  pairWaitMs: number;
}

/** The relay's shared state, handed to each session. */
export interface RelayContext {
  store: Store;
  /** Coalesced cookie checks (the store's resolveCookie behind a short cache). */
  cookies: CookieCache;
  lot: ParkingLot;
  cluster?: ClusterLink;
  limits: RelayLimits;
  connectPolicy: ConnectPolicy;
  log: Log;
  /**
   * Admits a fresh connection into its handshake, or says why not (too many handshakes from its
   * source address or in all). `release` is idempotent and also runs when the socket closes.
   */
  admit(socket: Socket): { ok: true; release: () => void } | { ok: false; reason: string };
  /** Counts live splices (drain waits for them). */
  countSplice(delta: 1 | -1): void;
}
