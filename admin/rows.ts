/**
 * The console's rows: what the table shows per identity, gathered from the store (identity,
 * registration, park records of live relays, last rendezvous, wrong-code counter, this month's
 * bytes and the limits set), with times as
 * UTC ISO 8601.
 * No secret ever appears in a row. `GET /api/servers` serves these rows as JSON.
 */
import type { TotpCompat } from '../core/totp.js';
import { FAILURE_LIMIT_DEFAULTS, type FailurePolicy } from '../server/limits.js';
import type {
  Identity,
  LastRendezvousRecord,
  LiveParkRecord,
  ParkRecord,
  Store,
} from '../server/store/index.js';
import type { IdentityLimits } from '../server/usage-types.js';

/** A UTC ISO 8601 time to the second (`2026-12-01T04:21:05Z`). */
export type UtcTime = string;

/** Epoch milliseconds as UTC ISO 8601 to the second. */
export function utc(ms: number): UtcTime {
  return `${new Date(ms).toISOString().slice(0, 19)}Z`;
}
const utcSec = (sec?: number) => (sec === undefined ? undefined : utc(sec * 1000));

/** One relay holding an identity's sockets parked through one protocol. */
export interface ParkedOn {
  /** The relay's public address for the protocol (`host:port` or URL), else its peer address or id. */
  address: string;
  region?: string;
  /** The relay's own address in its cluster (which task, where all share one public name). */
  peer?: string;
  relayId: string;
  count: number;
  /** What the parked agent reported about its target (absent: it did not say). */
  target?: 'up' | 'down';
  targetSince?: UtcTime;
  targetReportedAt?: UtcTime;
}

/** One protocol's live figures for an identity. */
export interface ProtocolView {
  /** Sockets parked now, on all relays. */
  parked: number;
  relays: ParkedOn[];
  /** The freshest report of the relays' agents (absent: none reported). */
  target?: 'up' | 'down';
  targetReportedAt?: UtcTime;
  last?: {
    at: UtcTime;
    end: string;
    bytesToHidden: number;
    bytesToMobile: number;
    durationMs: number;
    hops: number;
    relay: string;
    region?: string;
  };
}

/** An identity's wrong-code guess state. */
export interface LockoutView {
  locked: boolean;
  /** Wrong codes in the current window, of `limit`. */
  failures: number;
  limit: number;
  /** When the window ends (the lock with it). */
  until?: UtcTime;
}

/** What the console shows per identity (no secret). */
export interface IdentityRow {
  uuid: string;
  label?: string;
  createdAt: UtcTime;
  disabled: boolean;
  lastRegistration?: UtcTime;
  region?: string;
  /** Relays (public addresses) holding parked sockets now, either protocol. */
  parkedOn: string[];
  lastSeen?: UtcTime;
  /** Compatibility settings (imported from node-rendezvous), in words; absent for strict identities. */
  compat?: string;
  importedFrom?: string;
  generic: ProtocolView;
  http: ProtocolView;
  /** Bytes both ways over both protocols this UTC month, as flushed by the relays (issue 30). */
  monthBytes: number;
  /** The limits set on the identity (absent: none). */
  limits?: IdentityLimits;
  lockout: LockoutView;
}

/** The compatibility settings of an identity in words, as the console shows them. */
export function describeCompat(c: TotpCompat): string {
  return [
    `codes: last ${c.digits === 'original' ? 6 : c.digits}–10 digits or the whole value, unpadded`,
    c.encoding === 'speakeasy' ? 'speakeasy key (UTF-8 of the bytes)' : 'RFC 6238 key',
    c.window === 0 ? 'no ±1 window' : '±1 step window',
    c.reuseWithinStep ? 'code reusable within its step' : 'one use per code',
    c.cookieLifetime === 'next-registration'
      ? 'cookie until the next registration'
      : `cookie ${c.cookieLifetime} s`,
  ].join('; ');
}

/** How a park record names its relay: public address, else HTTP URL, else peer address, else id. */
const relayName = (p: ParkRecord) => p.address || p.httpUrl || p.peer || `relay ${p.relayId.slice(0, 8)}`;

/** One protocol's figures from its park records and last rendezvous. */
function protocolView(parks: ParkRecord[], last: LastRendezvousRecord | undefined): ProtocolView {
  const relays: ParkedOn[] = parks.map((p) => ({
    address: relayName(p),
    region: p.region,
    peer: p.peer && p.peer !== relayName(p) ? p.peer : undefined,
    relayId: p.relayId,
    count: p.count,
    target: p.target,
    targetSince: p.targetSince ? utc(p.targetSince) : undefined,
    targetReportedAt: p.targetAt ? utc(p.targetAt) : undefined,
  }));
  // Several relays may hold the agent's sockets: the newest report is the truth.
  const freshest = parks.filter((p) => p.target).sort((a, b) => (b.targetAt ?? 0) - (a.targetAt ?? 0))[0];
  return {
    parked: parks.reduce((n, p) => n + p.count, 0),
    relays,
    target: freshest?.target,
    targetReportedAt: freshest?.targetAt ? utc(freshest.targetAt) : undefined,
    last: last && {
      at: utc(last.at),
      end: last.end,
      bytesToHidden: last.bytesToHidden,
      bytesToMobile: last.bytesToMobile,
      durationMs: last.durationMs,
      hops: last.hops,
      relay: last.address || `relay ${last.relayId.slice(0, 8)}`,
      region: last.region,
    },
  };
}

/**
 * Gathers the rows: identity, registration, park records, last rendezvous, guess counter. Only
 * records of relays whose heartbeat is alive are shown (`Store.liveParks`): a relay that crashed
 * leaves its records in the store, and stops being listed within 30 s; a relay that came back on
 * the same address is listed once.
 */
export async function identityRows(
  store: Store,
  nowMs = Date.now(),
  failures: FailurePolicy = {},
): Promise<IdentityRow[]> {
  return rowsOf(store, await store.listIdentities(), nowMs, failures);
}

/** The rows of the given identities only (one identity: `rendezvous identities show`). */
export async function rowsOf(
  store: Store,
  identities: Identity[],
  nowMs = Date.now(),
  failures: FailurePolicy = {},
): Promise<IdentityRow[]> {
  const limit = failures.maxFailures ?? FAILURE_LIMIT_DEFAULTS.maxFailures;
  const windowSec = failures.failureWindowSeconds ?? FAILURE_LIMIT_DEFAULTS.failureWindowSeconds;
  const gathered = await Promise.all(
    identities.map(async (id: Identity) => {
      const reg = await store.getRegistrationRecord(id.uuid);
      const [generic, http, last, attempts, monthBytes] = await Promise.all([
        reg ? store.liveParks('generic', reg.cookie, nowMs) : ([] as LiveParkRecord[]),
        store.liveParks('http', id.uuid, nowMs),
        store.getLastRendezvous(id.uuid, nowMs),
        store.getAttempts('uuid', id.uuid),
        store.monthBytes(id.uuid, nowMs),
      ]);
      return { id, reg, generic, http, last, attempts, monthBytes };
    }),
  );
  return gathered.map(({ id, reg, last, attempts, generic, http, monthBytes }) => {
    const parks = [...generic, ...http];
    // Parked on a live relay: seen at that relay's newest heartbeat.
    const seen = [reg?.registeredAt, ...parks.map((p) => Math.floor(p.relaySeenAt / 1000))].filter(
      (v): v is number => v !== undefined,
    );
    // The counter's window is the lock: guesses stop being evaluated at `limit` until it ends.
    const windowEnds = attempts ? attempts.windowStart + windowSec : 0;
    const current = attempts && windowEnds * 1000 > nowMs ? attempts.count : 0;
    return {
      uuid: id.uuid,
      label: id.label,
      createdAt: utcSec(id.createdAt) as UtcTime,
      disabled: Boolean(id.disabled),
      lastRegistration: utcSec(reg?.registeredAt),
      region: reg?.region,
      parkedOn: [...new Set(parks.map(relayName))],
      lastSeen: seen.length ? utcSec(Math.max(...seen)) : undefined,
      compat: id.compat ? describeCompat(id.compat) : undefined,
      importedFrom: id.compat?.importedFrom,
      generic: protocolView(generic, last.generic),
      http: protocolView(http, last.http),
      monthBytes,
      limits: id.limits && Object.keys(id.limits).length ? { ...id.limits } : undefined,
      lockout: {
        locked: current >= limit,
        failures: current,
        limit,
        until: current > 0 ? utcSec(windowEnds) : undefined,
      },
    };
  });
}

/** Whether a row matches the list's filter (a case-insensitive part of its uuid or label). */
export function rowMatches(r: IdentityRow, q: string): boolean {
  return (
    !q ||
    r.uuid.toLowerCase().includes(q.toLowerCase()) ||
    (r.label ?? '').toLowerCase().includes(q.toLowerCase())
  );
}

/** The list's orders: as the store lists them, or by this month's bytes (largest first). */
export type RowOrder = 'default' | 'usage';

/** The rows in `order` (a new array; ties keep the store's order). */
export function sortRows(rows: IdentityRow[], order: RowOrder): IdentityRow[] {
  return order === 'usage' ? [...rows].sort((a, b) => b.monthBytes - a.monthBytes) : rows;
}

/** How long one gathering of the rows serves every request (many tabs cost one). */
const GATHER_CACHE_MS = 2_000;

/** The rows, gathered at most once per GATHER_CACHE_MS, and forgotten after a change. */
export interface RowSource {
  /** The rows matching the filter `q` (all with an empty one), in `order` (default: the store's). */
  rows(q: string, order?: RowOrder): Promise<IdentityRow[]>;
  /** Forgets the gathered rows: whatever a POST changed shows on the very next page. */
  forget(): void;
}

/** A row source over `store`: one gathering serves every open tab for a moment. */
export function rowSource(store: Store, failures: FailurePolicy): RowSource {
  // Each gathering costs about six reads per identity (the month's usage is one Query).
  let gathered: { at: number; rows: Promise<IdentityRow[]> } | undefined;
  const gather = () => {
    if (!gathered || Date.now() - gathered.at > GATHER_CACHE_MS) {
      const rows = identityRows(store, Date.now(), failures);
      rows.catch(() => {
        gathered = undefined;
      });
      gathered = { at: Date.now(), rows };
    }
    return gathered.rows;
  };
  return {
    rows: async (q, order = 'default') =>
      sortRows(
        (await gather()).filter((r) => rowMatches(r, q)),
        order,
      ),
    forget: () => {
      gathered = undefined;
    },
  };
}
