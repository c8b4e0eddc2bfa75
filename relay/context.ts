/** What every listener of one relay process shares. */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Log } from '../core/log.js';
import type { ClaimsRouter } from '../server/claims.js';
import type { ConnectPolicy } from '../server/connect-auth.js';
import type { Store } from '../server/store/index.js';
import type { Admitted } from './admission.js';
import type { CookieCache } from './cookie-cache.js';
import type { IdentityLimitsCache } from './identity-limits.js';
import type { KnownNames, SplicesPerUuid, WaitingClients } from './limits.js';
import type { Meter } from './metering.js';
import type { ClusterLink } from './pairing.js';
import type { ParkRecords } from './park-records.js';
import type { ParkingLot } from './parking.js';
import type { RelayTelemetry, RendezvousStart } from './telemetry.js';

/** Per-connection limits. */
export interface RelayLimits {
  /** Time from accept to a complete cookie line or request head. */
  handshakeTimeoutMs: number;
  /** How long a mobile client waits for a parked socket. */
  pairWaitMs: number;
  /** A splice with no byte either way for this long is ended (0: never). */
  idleTimeoutMs: number;
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
  /** This relay's park records (agents' target reports go here). */
  records: ParkRecords;
  /** Metrics and the rate-limited refusal log. */
  telemetry: RelayTelemetry;
  /** This relay's id (in park records and rendezvous records). */
  relayId: string;
  /**
   * Admits a fresh connection into its handshake, or says why not (too many handshakes from its
   * source address or in all). `release` is idempotent and also runs when the socket closes.
   */
  admit(socket: Socket): Admitted;
  /**
   * Multi-region (when the relay knows its region): park records of this region (`others`) and of
   * other regions (`elsewhere`), for redirecting HTTP-specific requests to the region holding the
   * hidden server.
   */
  regions?: Pick<ParkRecords, 'others' | 'elsewhere'> & { region: string };
  /** The table's home replica, where CONNECT codes are claimed (another region of a global table). */
  home?: Store;
  /** Where CONNECT codes are claimed, per request (the claims region an operator can move); before `home`. */
  claims?: ClaimsRouter;
  /** HTTP-specific: the domain under which `<id>.<domain>` names hidden server `<id>`. */
  httpDomain?: string;
  /**
   * HTTP-specific, with host routing: the parent name (and other names under the domain) still
   * serves tenants named by `?rendezvous=`, Digest or Basic — one origin shared by all of them,
   * unsafe for browsers (`RELAY_HTTP_SHARED_ORIGIN`).
   */
  httpSharedOrigin?: boolean;
  /** Bounds on mobile clients waiting for a hidden server. */
  waiting: WaitingClients;
  /** Live splices per hidden server, capped. */
  perUuid: SplicesPerUuid;
  /** Per-identity limits (quota, bandwidth, concurrent rendezvous), kept fresh by change notices. */
  identityLimits: IdentityLimitsCache;
  /** Which names are identities (negative answers cached briefly). */
  names: KnownNames;
  /**
   * Splices a hidden server's stream with a mobile client's (or a peer link's) socket: counted in
   * all and per uuid, ended after the idle timeout, logged once at its end. The filters see the
   * bytes of one direction each.
   */
  spliceHidden(hidden: Duplex, mobile: Duplex, rendezvous: RendezvousStart, filters?: SpliceFilters): void;
  /** Usage per identity on this relay (absent when metering is off): `unflushedBytes`, `flush`. */
  meter?: Meter;
  /** Turns TCP keepalive on for a socket about to wait idle (a parked hidden server). */
  keepAlive(socket: Socket): void;
}

/** Streams the bytes of a splice pass through, one per direction. */
export interface SpliceFilters {
  /** Mobile client → hidden server. */
  intoHidden?: Duplex;
  /** Hidden server → mobile client. */
  intoMobile?: Duplex;
  /**
   * Bytes `intoHidden` has passed on so far (it drops some: the HTTP port's one-request gate).
   * The meter bills these, not what was read from the mobile client: a client that goes on
   * sending after its request spends nothing of the identity's quota.
   */
  carriedToHidden?: () => number;
}
