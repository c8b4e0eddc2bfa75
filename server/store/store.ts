/**
 * The state store: one DynamoDB table (keys.ts has its layout), reached through `Store`, a facade
 * over one module per record type — identities, registrations and cookies, guess attempts, parks
 * and last rendezvous, relay heartbeats, change notices, usage — that share one Table (table.ts, the
 * only SDK caller). SDK errors leave as typed errors (errors.ts). Consumers hold a `Store` (or a
 * `Pick` of it) and call its methods; the per-record modules are its implementation.
 */
import type { ParkKind } from '../../core/protocol.js';
import type { TotpCompat, TotpParams } from '../../core/totp.js';
import type { IdentityLimits, UsageTotals } from '../usage-types.js';
import { type AttemptScope, Attempts, type AttemptWindow, type Reservation } from './attempts.js';
import { type BandwidthLease, BandwidthLeases } from './bandwidth.js';
import { type ChangeNotice, Changes } from './changes.js';
import { type ClaimsRegionRecord, ClaimsRegions } from './claims-region.js';
import type { StoreSettings } from './errors.js';
import { type ClaimExtra, Identities, type Identity } from './identities.js';
import {
  type LastRendezvous,
  LastRendezvousRecords,
  type LiveParkRecord,
  type ParkRecord,
  Parks,
} from './parks.js';
import { type CookieBinding, REVOKED_FOR_GOOD, type Registration, Registrations } from './registrations.js';
import { type RelayHeartbeat, RelayHeartbeats, relayAlive } from './relays.js';
import { type StoreOptions, Table } from './table.js';
import { type IdentityUsage, Usage, type UsageRankEntry } from './usage.js';

/** DynamoDB-backed store. One instance (one SDK client) per process. */
export class Store {
  /** The table's name. */
  readonly table: string;
  /** What this store runs on and where each setting came from (named when it fails). */
  readonly settings: StoreSettings;
  private readonly t: Table;
  private readonly identities: Identities;
  private readonly registrations: Registrations;
  private readonly attempts: Attempts;
  private readonly parks: Parks;
  private readonly last: LastRendezvousRecords;
  private readonly changes: Changes;
  private readonly claimsRegions: ClaimsRegions;
  private readonly heartbeats: RelayHeartbeats;
  private readonly usage: Usage;
  private readonly bandwidth: BandwidthLeases;

  constructor(opts: StoreOptions) {
    this.t = new Table(opts);
    this.table = this.t.name;
    this.settings = this.t.settings;
    this.changes = new Changes(this.t);
    this.registrations = new Registrations(this.t, this.changes);
    this.last = new LastRendezvousRecords(this.t);
    this.identities = new Identities(this.t, this.registrations, this.last, this.changes);
    this.attempts = new Attempts(this.t);
    this.parks = new Parks(this.t);
    this.claimsRegions = new ClaimsRegions(this.t);
    this.heartbeats = new RelayHeartbeats(this.t);
    this.usage = new Usage(this.t);
    this.bandwidth = new BandwidthLeases(this.t);
  }

  /** Creates the table if missing (local stacks and tests; CDK owns it on AWS). */
  ensureTable(): Promise<void> {
    return this.t.ensureTable();
  }

  /** Releases the SDK client's sockets. */
  close(): void {
    this.t.close();
  }

  // The claims region (claims-region.ts)

  /** The claims region an operator set on this replica, or undefined (the deployed one applies). */
  getClaimsRegion(): Promise<ClaimsRegionRecord | undefined> {
    return this.claimsRegions.get();
  }

  /** Sets the claims region on this replica (replication carries it to the other replicas). */
  setClaimsRegion(region: string, nowMs?: number): Promise<void> {
    return this.claimsRegions.set(region, nowMs);
  }

  // Identities (identities.ts)

  /** Creates an identity; ALREADY_EXISTS when the uuid is taken. */
  async createIdentity(id: Identity): Promise<void> {
    await this.identities.create(id);
    // A uuid provisioned again after a deletion: its generations start over, so the deletion's
    // fence would refuse every registration of it.
    await this.registrations.unfence(id.uuid);
  }

  /** Reads an identity, or undefined. */
  getIdentity(uuid: string): Promise<Identity | undefined> {
    return this.identities.get(uuid);
  }

  /** Every identity (operator console). Secrets stay in the items; callers must not show them. */
  listIdentities(): Promise<Identity[]> {
    return this.identities.list();
  }

  /** Claims `step` as the last accepted TOTP step: a code is usable once (see Identities.acceptStep). */
  acceptStep(
    uuid: string,
    step: number,
    by: 'register' | 'connect' = 'register',
    httpCookie?: { cookie: string; expiresAt: number },
    extra: ClaimExtra = {},
  ): Promise<boolean> {
    return this.identities.acceptStep(uuid, step, by, httpCookie, extra);
  }

  /** Counts one more use of `lastStep`'s code, at most `max` (see Identities.reuseStep). */
  reuseStep(
    uuid: string,
    step: number,
    by: 'register' | 'connect',
    max: number,
    extra: ClaimExtra = {},
  ): Promise<Identity | undefined> {
    return this.identities.reuseStep(uuid, step, by, max, extra);
  }

  /** Disables (ending its registration) or enables an identity. */
  async setDisabled(uuid: string, disabled: boolean): Promise<void> {
    await this.identities.setDisabled(uuid, disabled);
    if (disabled) await this.fenceRegistration(uuid);
  }

  /**
   * After a rotation or disable (which bumped the generation and deleted the registration): the
   * fence that refuses a registration of an older generation still on its way (its code claimed
   * before the bump), or replaces one that landed after the deletion (Registrations.fence).
   */
  private async fenceRegistration(uuid: string): Promise<void> {
    const id = await this.identities.get(uuid);
    await this.registrations.fence(uuid, id ? (id.generation ?? 0) : REVOKED_FOR_GOOD);
  }

  /**
   * Replaces an identity's TOTP secret and ends everything made with the old one. Its guesses are
   * cleared (see `setCompat`).
   */
  async rotateSecret(uuid: string, params: TotpParams, compat?: TotpCompat): Promise<void> {
    await this.identities.rotateSecret(uuid, params, compat);
    await this.fenceRegistration(uuid);
    await this.attempts.reset(uuid);
  }

  /**
   * Sets (or removes) an identity's compatibility settings and informative `digits`, and clears its
   * guesses: those were judged by the old rules (an original client refused for its code length
   * is not a guesser), so the fix takes effect at once instead of after the window.
   */
  async setCompat(uuid: string, compat: TotpCompat | undefined, digits: number): Promise<void> {
    await this.identities.setCompat(uuid, compat, digits);
    await this.attempts.reset(uuid);
  }

  /**
   * Sets an identity's usage limits (undefined or `{}` clears them; BAD_REQUEST for a bad value,
   * see `checkLimits`): a change notice first, then the identity item, so relays pick the new
   * limits up in their next revalidation round. NOT_FOUND for an unknown uuid.
   */
  setLimits(uuid: string, limits: IdentityLimits | undefined): Promise<void> {
    return this.identities.setLimits(uuid, limits);
  }

  /** Deletes an identity, its registration and its last-rendezvous record (its usage stays until it ages out). */
  async deleteIdentity(uuid: string): Promise<void> {
    await this.identities.delete(uuid);
    await this.registrations.fence(uuid, REVOKED_FOR_GOOD);
  }

  // Registrations and cookies (registrations.ts)

  /** Makes `reg` the uuid's current registration; returns the one it replaced. */
  putRegistration(reg: Registration): Promise<Registration | undefined> {
    return this.registrations.put(reg);
  }

  /** Writes a registration's cookie item, inert until `swapRegistration` makes it current. */
  putRegistrationCookie(reg: Registration): Promise<void> {
    return this.registrations.putCookie(reg);
  }

  /** Deletes a cookie item that never became current (its registration was refused). */
  dropRegistrationCookie(cookie: string): Promise<void> {
    return this.registrations.dropCookie(cookie);
  }

  /**
   * Makes `reg` current (its cookie item written) with its change notice; returns the one it
   * replaced, or `fenced` when a rotation, disable or deletion since its generation refuses it.
   */
  swapRegistration(reg: Registration): Promise<{ replaced?: Registration; fenced: boolean }> {
    return this.registrations.swap(reg);
  }

  /** The uuid's live registration, or undefined (missing, expired, or from before the R/I split). */
  getRegistration(uuid: string, nowMs: number = Date.now()): Promise<Registration | undefined> {
    return this.registrations.get(uuid, nowMs);
  }

  /** The uuid's registration even when expired (operator console: "last registration"). */
  getRegistrationRecord(uuid: string): Promise<Registration | undefined> {
    return this.registrations.record(uuid);
  }

  /** Resolves a current cookie to its uuid; throws COOKIE_UNKNOWN, COOKIE_EXPIRED or COOKIE_REPLACED. */
  resolveCookie(cookie: string, nowMs: number = Date.now()): Promise<CookieBinding> {
    return this.registrations.resolveCookie(cookie, nowMs);
  }

  /** Shortens a replaced cookie record's life. */
  expireCookie(cookie: string, expiresAt: number): Promise<void> {
    return this.registrations.expireCookie(cookie, expiresAt);
  }

  /** Deletes the uuid's registration and cookie; with `onlyCookie`, only while that is current. */
  deleteRegistration(uuid: string, onlyCookie?: string): Promise<void> {
    return this.registrations.delete(uuid, onlyCookie);
  }

  // Guess attempts (attempts.ts)

  /** Reserves one guess in a counter's window, atomically (at most `limit` per window). */
  reserveAttempt(
    scope: AttemptScope,
    key: string,
    limit: number,
    nowSec: number,
    windowSec: number,
  ): Promise<Reservation> {
    return this.attempts.reserve(scope, key, limit, nowSec, windowSec);
  }

  /** Gives back a reservation, if its window is still the current one. */
  refundAttempt(scope: AttemptScope, key: string, windowStart: number): Promise<void> {
    return this.attempts.refund(scope, key, windowStart);
  }

  /** Remembers which source a guess counted on a uuid came from (what a settings change gives back). */
  noteFailedGuess(
    uuid: string,
    uuidWindowStart: number,
    source: string,
    sourceWindowStart: number,
  ): Promise<void> {
    return this.attempts.noteFailure(uuid, uuidWindowStart, source, sourceWindowStart);
  }

  /** A guess counter's window, or undefined. */
  getAttempts(scope: AttemptScope, key: string): Promise<AttemptWindow | undefined> {
    return this.attempts.get(scope, key);
  }

  /** Ends a uuid's lockout (operator console): deletes its guess counter. */
  unlockIdentity(uuid: string): Promise<void> {
    return this.attempts.unlock(uuid);
  }

  // Parks and last rendezvous (parks.ts)

  /** Records (or refreshes) that relay `rec.relayId` holds parked sockets for `key`. */
  putPark(kind: ParkKind, key: string, rec: ParkRecord): Promise<void> {
    return this.parks.put(kind, key, rec);
  }

  /** Removes a relay's park record for `key`. */
  deletePark(kind: ParkKind, key: string, relayId: string): Promise<void> {
    return this.parks.delete(kind, key, relayId);
  }

  /**
   * The unexpired park records for `key`, newest write first, whatever their relays' state (a
   * crashed relay's records stay until their GC expiry): most readers want `liveParks`.
   */
  listParks(kind: ParkKind, key: string, nowMs: number = Date.now()): Promise<ParkRecord[]> {
    return this.parks.list(kind, key, nowMs);
  }

  /**
   * The park records for `key` whose relay's heartbeat is alive at `nowMs`, newest write first:
   * what look-ups, peers' dials and the console name. Heartbeats are cached in-process for a few
   * seconds per relay (HEARTBEAT_CACHE_MS), so a hot key costs its one query and no more.
   */
  async liveParks(kind: ParkKind, key: string, nowMs: number = Date.now()): Promise<LiveParkRecord[]> {
    const records = await this.parks.list(kind, key, nowMs);
    if (records.length === 0) return [];
    const beats = await this.heartbeats.cached(
      records.map((r) => r.relayId),
      nowMs,
    );
    const live: LiveParkRecord[] = [];
    for (const r of records) {
      const beat = beats.get(r.relayId);
      if (beat && relayAlive(beat, nowMs)) live.push({ ...r, relaySeenAt: beat.at });
    }
    return live;
  }

  /** Records a uuid's last rendezvous for the given protocols in one write (the others stay). */
  putLastRendezvous(uuid: string, last: LastRendezvous, nowMs: number = Date.now()): Promise<void> {
    return this.last.put(uuid, last, nowMs);
  }

  /** A uuid's last rendezvous per protocol (empty when none is recorded or it expired). */
  getLastRendezvous(uuid: string, nowMs: number = Date.now()): Promise<LastRendezvous> {
    return this.last.get(uuid, nowMs);
  }

  // Relay heartbeats (relays.ts)

  /** Records that relay `relayId` is alive until `liveUntil` (epoch ms; now or past: it stopped). */
  putRelayHeartbeat(relayId: string, liveUntil: number, nowMs: number = Date.now()): Promise<void> {
    return this.heartbeats.put(relayId, liveUntil, nowMs);
  }

  /** The heartbeats of `relayIds`, read now (a relay without one is absent, and counts as dead). */
  relayHeartbeats(relayIds: Iterable<string>): Promise<Map<string, RelayHeartbeat>> {
    return this.heartbeats.get(relayIds);
  }

  // Usage (usage.ts)

  /**
   * Adds a relay's usage delta for `uuid` to its day item (that day's and that hour's counters):
   * ONE UpdateItem, none for an all-zero delta. Relays call it at most once per identity per flush.
   */
  addUsage(uuid: string, delta: UsageTotals, nowMs: number = Date.now()): Promise<void> {
    return this.usage.add(uuid, delta, nowMs);
  }

  /** An identity's usage today, this month, the last 30 days and today's hours (one Query). */
  usageOf(uuid: string, nowMs: number = Date.now()): Promise<IdentityUsage> {
    return this.usage.of(uuid, nowMs);
  }

  /** Bytes both ways over both protocols this UTC month, what a quota counts (one Query). */
  monthBytes(uuid: string, nowMs: number = Date.now()): Promise<number> {
    return this.usage.monthBytes(uuid, nowMs);
  }

  /**
   * Every identity with usage in `month` (YYYY-MM, default this month), by bytes, largest first.
   * Costly: a Scan of the whole table (Usage.ranking) — operator-triggered only.
   */
  usageRanking(month?: string): Promise<UsageRankEntry[]> {
    return this.usage.ranking(month);
  }

  // Bandwidth leases (bandwidth.ts)

  /**
   * Writes relay `lease.relayId`'s lease on a share of `uuid`'s bandwidth cap and reads the live
   * leases of every relay carrying it (one write and one query; the answer may miss this write).
   */
  refreshBandwidthLease(
    uuid: string,
    lease: BandwidthLease,
    nowMs: number = Date.now(),
  ): Promise<BandwidthLease[]> {
    return this.bandwidth.refresh(uuid, lease, nowMs);
  }

  /** Deletes a relay's bandwidth lease for `uuid` (it no longer carries that identity's traffic). */
  dropBandwidthLease(uuid: string, relayId: string): Promise<void> {
    return this.bandwidth.drop(uuid, relayId);
  }

  // Change notices (changes.ts)

  /**
   * Records that `uuid`'s cookie or identity changes: written before the change it announces (a
   * relay re-checks a noticed uuid while the notice is young, so the change is seen when it lands).
   */
  noteChange(uuid: string, nowMs: number = Date.now()): Promise<void> {
    return this.changes.note(uuid, nowMs);
  }

  /** Change notices stamped at or after `sinceMs`, oldest first. */
  changesSince(sinceMs: number): Promise<ChangeNotice[]> {
    return this.changes.since(sinceMs);
  }
}

/**
 * One cheap strongly consistent read, so a command that uses the store later (the console)
 * fails at start with the cause instead of on its first page.
 */
export async function probeStore(store: Store): Promise<void> {
  await store.getIdentity('rendezvous-probe');
}
