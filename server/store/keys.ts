/**
 * The key schema of the one table (`pk`/`sk`, TTL attribute `expiresAt`): every key is built
 * here, so the layout below is the whole truth.
 *
 *   SERVER#<uuid> / IDENTITY       secret, digits, step, algorithm, label, lastStep, generation,
 *                                  trusted sources, compat (settings of identities imported from
 *                                  node-rendezvous; absent = strict), reuses
 *   SERVER#<uuid> / REGISTRATION   current mobile cookie <c>, scheme, relay host/port, region, expiresAt
 *   SERVER#<uuid> / ATTEMPTS       wrong-code guesses in the current window and the one before, the
 *                                  sources they came from (exists for any uuid
 *                                  anyone guessed at, known or not, so the two look the same)
 *   SOURCE#<addr> / ATTEMPTS       guesses from one source address in the current window
 *   COOKIE#<c>    / COOKIE         uuid, expiresAt
 *   COOKIE#<c>    / PARK#<relay>   a relay holding generic-protocol sockets parked for <c>
 *   SERVER#<uuid> / HTTPPARK#<relay>  a relay holding HTTP-protocol (CONNECT) sockets of <uuid>
 *   SERVER#<uuid> / LAST           the uuid's last rendezvous per protocol (operator console)
 *   SERVICE       / CLAIMS_REGION  the region codes are claimed in, when an operator moved it
 *                                  (`rendezvous claims-region`; absent = the deployed one)
 *   RELAY#<id>    / HEARTBEAT      a relay's newest heartbeat: alive until `liveUntil` (epoch ms);
 *                                  outlives the relay's park records (console: a crashed relay's
 *                                  records are not shown as live)
 *   BANDWIDTH#<uuid> / <relay>    a relay's lease on a share of <uuid>'s bandwidth cap: bytes/s it
 *                                  carried, whether it was held back, live until (epoch ms);
 *                                  rewritten every few seconds only while it carries that traffic
 *   CHANGES       / <ms>#<rand>    a uuid whose cookie or identity changed (replaced, revoked,
 *                                  rotated, disabled, deleted, limits set): relays read these once
 *                                  per pass instead of re-reading every parked key (expires after
 *                                  an hour)
 *   usage#<uuid>  / day#YYYY-MM-DD#<region>  one UTC day of a uuid's usage metered in one region
 *                                  (usage.ts): that day's counters per protocol and each hour's,
 *                                  added to by that region's relays' flushes; expires
 *                                  USAGE_TTL_SECONDS (~400 days) after the day
 *
 * <c> is always the mobile (`I`) cookie; the hidden server's `R` cookie is never stored (the relay
 * derives <c> from it, see `mobileCookieFor`).
 */
import type { ParkKind } from '../../core/protocol.js';

/** One item's primary key. */
export interface Key {
  pk: string;
  sk: string;
}

const serverKey = (uuid: string) => `SERVER#${uuid}`;
const cookieKey = (cookie: string) => `COOKIE#${cookie}`;

/** The sort key every identity item has (a scan for identities filters on it). */
export const IDENTITY_SK = 'IDENTITY';

/** A uuid's identity item. */
export const identityKey = (uuid: string): Key => ({ pk: serverKey(uuid), sk: IDENTITY_SK });

/** A uuid's current registration. */
export const registrationKey = (uuid: string): Key => ({ pk: serverKey(uuid), sk: 'REGISTRATION' });

/** The item a mobile cookie resolves through. */
export const cookieItemKey = (cookie: string): Key => ({ pk: cookieKey(cookie), sk: 'COOKIE' });

/** The claims-region record (one per table; replicated like every item). */
export const claimsRegionKey: Key = { pk: 'SERVICE', sk: 'CLAIMS_REGION' };

/** A uuid's last rendezvous per protocol. */
export const lastRendezvousKey = (uuid: string): Key => ({ pk: serverKey(uuid), sk: 'LAST' });

/** What a guess counter is kept for: one uuid, or one source address. */
export type AttemptScope = 'uuid' | 'source';

/** A guess counter's item. */
export const attemptsKey = (scope: AttemptScope, key: string): Key => ({
  pk: scope === 'uuid' ? serverKey(key) : `SOURCE#${key}`,
  sk: 'ATTEMPTS',
});

/** The partition of `key`'s park records and the sort-key prefix before each relay's id. */
export const parkKeys = (kind: ParkKind, key: string): { pk: string; prefix: string } =>
  kind === 'generic' ? { pk: cookieKey(key), prefix: 'PARK#' } : { pk: serverKey(key), prefix: 'HTTPPARK#' };

/** A relay's heartbeat item. */
export const relayHeartbeatKey = (relayId: string): Key => ({ pk: `RELAY#${relayId}`, sk: 'HEARTBEAT' });

/** A relay's bandwidth lease for a uuid (its partition holds every relay's lease for that uuid). */
export const bandwidthLeaseKeys = (uuid: string, relayId: string): Key => ({
  pk: `BANDWIDTH#${uuid}`,
  sk: relayId,
});

/** The partition every change notice is written to. */
export const CHANGES_PK = 'CHANGES';

/** Sort key of a change notice: zero-padded milliseconds, so a range read is a time range. */
export const changeSk = (ms: number): string => ms.toString().padStart(15, '0');

/** The partition of a uuid's usage items (one per UTC day it had any). */
export const usagePk = (uuid: string): string => `usage#${uuid}`;

/** The sort-key prefix of usage day items: `day#` + YYYY-MM-DD + `#` + region (a month's are `day#YYYY-MM`). */
export const USAGE_DAY_PREFIX = 'day#';

/** A uuid's usage item of one UTC day (`day`: YYYY-MM-DD) written in `region` (each region its own). */
export const usageDayKey = (uuid: string, day: string, region: string): Key => ({
  pk: usagePk(uuid),
  sk: `${USAGE_DAY_PREFIX}${day}#${region}`,
});
