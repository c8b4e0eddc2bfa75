/**
 * The store's public face: what the rest of the service (functions/, relay/, admin/, local/,
 * cli/) imports: the `Store` facade, the record types its methods take and return, and the facts of
 * the records others need (TTLs, the cookie scheme). The per-record modules behind it, the key
 * schema and the SDK stay the store's own business.
 */
export type { ParkKind } from '../../core/protocol.js';
export type { AttemptScope, AttemptWindow, Reservation } from './attempts.js';
export type { BandwidthLease } from './bandwidth.js';
export { CHANGE_TTL_SECONDS, type ChangeNotice } from './changes.js';
export type { ClaimsRegionRecord } from './claims-region.js';
export { failedStore, type StoreSettings } from './errors.js';
export {
  type ClaimExtra,
  type CodeLength,
  checkLimits,
  type Identity,
  MIN_BYTES_PER_SECOND,
} from './identities.js';
export {
  LAST_RENDEZVOUS_TTL_SECONDS,
  type LastRendezvous,
  type LastRendezvousRecord,
  type LiveParkRecord,
  PARK_RECORD_TTL_SECONDS,
  type ParkRecord,
} from './parks.js';
export { type CookieBinding, type Registration, SPLIT_COOKIE_SCHEME } from './registrations.js';
export { HEARTBEAT_CACHE_MS, type RelayHeartbeat, relayAlive } from './relays.js';
export { probeStore, Store } from './store.js';
export { STORE_REQUEST_TIMEOUT_MS, type StoreOptions } from './table.js';
export {
  checkMonth,
  type IdentityUsage,
  USAGE_DAYS,
  USAGE_TTL_SECONDS,
  type UsageRankEntry,
  usageDay,
  usageMonth,
} from './usage.js';
