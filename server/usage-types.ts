/**
 * The shapes metering and per-identity limits share (issue 30): what a relay flushes, what the
 * store sums per hour, day and month, and the limits an operator sets on an identity. Data only,
 * so the relay, the store, the CLI and the console agree without importing each other.
 */

/** The protocols usage is kept apart for. */
export type UsageProtocol = 'generic' | 'http';

/** Usage of one protocol over some period (or a delta a relay flushes). */
export interface UsageCounters {
  /** Bytes carried towards the hidden server (mobile → hidden). */
  bytesToHidden: number;
  /** Bytes carried towards the mobile client (hidden → mobile). */
  bytesToMobile: number;
  /** Rendezvous that began. */
  rendezvous: number;
  /** Seconds rendezvous were live (a live one counts the seconds of each flush interval). */
  connectionSeconds: number;
}

/** Usage of an identity over some period, per protocol. */
export type UsageTotals = Record<UsageProtocol, UsageCounters>;

/** Limits an operator sets on one identity; an absent field is no limit. Imported identities have none. */
export interface IdentityLimits {
  /** Bytes (both directions, both protocols) per UTC calendar month; beyond it new rendezvous are refused. */
  monthlyBytes?: number;
  /** Bytes per second (both directions together) over all of the identity's rendezvous. */
  bytesPerSecond?: number;
  /** Live rendezvous at once (replaces the relay's default per-hidden-server cap for this identity). */
  maxConcurrent?: number;
}

/** Zero usage. */
export function emptyCounters(): UsageCounters {
  return { bytesToHidden: 0, bytesToMobile: 0, rendezvous: 0, connectionSeconds: 0 };
}

/** Zero usage for both protocols. */
export function emptyTotals(): UsageTotals {
  return { generic: emptyCounters(), http: emptyCounters() };
}

/** Bytes both ways over both protocols: what a quota counts. */
export function totalBytes(t: UsageTotals): number {
  return t.generic.bytesToHidden + t.generic.bytesToMobile + t.http.bytesToHidden + t.http.bytesToMobile;
}
