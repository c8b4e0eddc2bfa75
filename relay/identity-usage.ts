/**
 * A relay's per-identity usage parts (issue 30), made together because each leans on another:
 * the meter (what this relay carried), the limits cache (whose quota check adds what the meter
 * has counted but not written, and takes what it writes), and the bandwidth caps (which read the
 * cached limits).
 */
import type { Log } from '../core/log.js';
import type { Store } from '../server/store/index.js';
import { Bandwidth, type BandwidthRelayOptions } from './bandwidth.js';
import { IdentityLimitsCache } from './identity-limits.js';
import { Meter } from './metering.js';

/** What the relay's options say of usage: its store, metering (on unless false), the lease period. */
export interface IdentityUsageOptions extends BandwidthRelayOptions {
  store: Store;
  metering?: false | { flushMs?: number };
}

/** The parts, wired to one another. */
export interface IdentityUsage {
  /** Absent when metering is off. */
  meter?: Meter;
  identityLimits: IdentityLimitsCache;
  bandwidth: Bandwidth;
}

/** Makes a relay's meter, limits cache and bandwidth caps. */
export function identityUsage(opts: IdentityUsageOptions, relayId: string, log: Log): IdentityUsage {
  const { store, metering } = opts;
  const identityLimits: IdentityLimitsCache = new IdentityLimitsCache({
    store,
    log,
    localBytes: (uuid) => meter?.unflushedBytes(uuid) ?? 0,
  });
  // The quota check's cached month total takes what the meter writes (identity-limits.ts `written`).
  const onWritten = (uuid: string, bytes: number) => identityLimits.written(uuid, bytes);
  const meter = metering === false ? undefined : new Meter({ store, relayId, log, onWritten, ...metering });
  const bandwidth = new Bandwidth({
    store,
    bandwidthLeaseMs: opts.bandwidthLeaseMs,
    relayId,
    limits: identityLimits,
    log,
  });
  return { meter, identityLimits, bandwidth };
}
