/**
 * This relay's park records in the store: the cluster's way of finding which relay holds a
 * parked socket. A key's record is written when its first socket parks, refreshed while any
 * stay parked (so a dead relay's records expire), and deleted when the last one leaves.
 */
import type { Log } from '../core/log.js';
import {
  PARK_RECORD_TTL_SECONDS,
  type ParkKind,
  type ParkRecord,
  type Store,
} from '../server/store/index.js';
import type { ParkingLot } from './parking.js';
import { Rotation } from './rotation.js';
import type { TargetState } from './telemetry.js';

/** Each key's record is rewritten once per this period, spread evenly (a third of the TTL). */
export const PARK_RECORD_REFRESH_MS = (PARK_RECORD_TTL_SECONDS * 1000) / 3;
/** How often a share of the records is refreshed. */
export const PARK_RECORD_TICK_MS = 10_000;
/**
 * A key's record outlives its last parked socket this long: under load a hidden server's pool is
 * empty for moments between rendezvous, and peers asking then should queue here, not give up.
 */
export const PARK_RECORD_LINGER_MS = 2_000;
/**
 * How often a relay writes its heartbeat (server/store/relays.ts). It counts as alive for
 * HEARTBEAT_LIVES beats: the console stops showing a crashed relay's parks within about 90 s,
 * where its park records would last 15 minutes.
 */
export const RELAY_HEARTBEAT_MS = 30_000;
/** Beats a relay may miss (a slow store write) before it counts as dead. */
export const HEARTBEAT_LIVES = 3;

/** How long one query of other relays' records serves every waiting mobile client. */
export const OTHERS_CACHE_MS = 200;

/**
 * Where a relay is: its region and its region's public HTTP-specific URL (for other regions), and
 * the public `host:port` a person uses for each protocol (for the operator console; never dialled).
 */
export interface ParkOrigin {
  region?: string;
  httpUrl?: string;
  address?: string;
  httpAddress?: string;
  /** `host:port` of this relay's generic port as mobile clients reach it directly (generic records). */
  direct?: string;
}

/**
 * A key's target state reaches the store at most once per this period (the newest state wins at
 * its end): an agent whose target flaps, or anyone holding its R cookie, cannot turn park lines
 * into a write each.
 */
export const TARGET_WRITE_MS = 10_000;

/** What an agent parked on a key last said about its target. */
interface TargetNote {
  state: TargetState;
  /** When it changed to `state`, and when it was last said (epoch ms). */
  since: number;
  at: number;
  /** The state the store holds for this key (undefined: none written yet), and when it was written. */
  written?: TargetState;
  writtenAt?: number;
  /** A write waiting for the end of the period. */
  timer?: NodeJS.Timeout;
}

/** Whose records, where they go, and what they carry. */
export interface ParkRecordsOptions {
  store: Pick<Store, 'putPark' | 'deletePark' | 'listParks' | 'putRelayHeartbeat'>;
  /** This relay's identity in the records. */
  relayId: string;
  /** `host:port` other relays dial ('' for a relay alone: nobody dials it). */
  peer: string;
  log: Log;
  /** Records live this long without a refresh (default PARK_RECORD_TTL_SECONDS). */
  ttlSeconds?: number;
  /** Written into every record; records of another region are never dialled, only redirected to. */
  origin?: ParkOrigin;
  /** How often the relay's heartbeat is written (default RELAY_HEARTBEAT_MS). */
  heartbeatMs?: number;
}

/** Keeps this relay's park records in step with its parking lot. */
export class ParkRecords {
  private timer: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private lot: ParkingLot | undefined;
  private readonly written = new Set<string>();
  private readonly pendingDeletes = new Map<string, NodeJS.Timeout>();
  private readonly targets = new Map<string, TargetNote>();
  /** Minimum time between two target-state writes of one key (tests shorten it). */
  targetWriteMs = TARGET_WRITE_MS;

  private readonly store: ParkRecordsOptions['store'];
  /** This relay's identity in the records. */
  readonly relayId: string;
  /** `host:port` other relays dial. */
  readonly peer: string;
  private readonly log: Log;
  private readonly ttlSeconds: number;
  private readonly heartbeatMs: number;
  /** Written into every record; records of another region are never dialled, only redirected to. */
  readonly origin: ParkOrigin;

  constructor(opts: ParkRecordsOptions) {
    this.store = opts.store;
    this.relayId = opts.relayId;
    this.peer = opts.peer;
    this.log = opts.log;
    this.ttlSeconds = opts.ttlSeconds ?? PARK_RECORD_TTL_SECONDS;
    this.origin = opts.origin ?? {};
    this.heartbeatMs = opts.heartbeatMs ?? RELAY_HEARTBEAT_MS;
  }

  /** True for a record of this relay's region (records and relays without a region count as one). */
  private sameRegion(r: ParkRecord): boolean {
    return !r.region || !this.origin.region || r.region === this.origin.region;
  }

  /** Starts the refresh loop over `lot`. */
  start(lot: ParkingLot): void {
    this.lot = lot;
    const refreshMs = (this.ttlSeconds * 1000) / 3;
    const tick = Math.min(PARK_RECORD_TICK_MS, refreshMs);
    const generic = new Rotation(refreshMs, tick);
    const http = new Rotation(refreshMs, tick);
    this.timer = setInterval(() => void this.refresh(generic, http), tick);
    this.timer.unref();
    // Alive while it beats: readers tell this relay's records from those of a crashed one.
    const beat = () =>
      void this.store
        .putRelayHeartbeat(this.relayId, Date.now() + HEARTBEAT_LIVES * this.heartbeatMs)
        .catch((err) => this.fail(err, 'relay heartbeat write failed'));
    beat();
    this.heartbeat = setInterval(beat, this.heartbeatMs);
    this.heartbeat.unref();
  }

  /**
   * An agent parking on `key` reported its target `up` or `down`. Kept with the key and written
   * into its park record only when the state changes (agents repeat it on every park), so the
   * store cost stays one refresh per key per period; the refresh carries the newest report time.
   */
  noteTarget(kind: ParkKind, key: string, target: TargetState): void {
    const k = `${kind} ${key}`;
    const now = Date.now();
    const note = this.targets.get(k);
    if (note?.state === target) {
      note.at = now;
      return;
    }
    if (note) Object.assign(note, { state: target, since: now, at: now });
    else this.targets.set(k, { state: target, since: now, at: now });
    this.syncTarget(kind, key);
  }

  /**
   * Writes a key's target state when the store's differs and the key is parked. An agent reports
   * a change by re-parking, so the report often arrives while its count is 0 (between the old
   * sockets' close and the new ones' park): then the next park writes it (onCount). At most one
   * write per TARGET_WRITE_MS per key; a change inside the period is written at its end.
   */
  private syncTarget(kind: ParkKind, key: string): void {
    const k = `${kind} ${key}`;
    const note = this.targets.get(k);
    // Not parked yet (or between parks): the next park's write carries it.
    if (!note || note.timer || note.written === note.state || !this.written.has(k)) return;
    const count = this.lot?.count(kind, key) ?? 0;
    if (count === 0) return;
    const wait = (note.writtenAt ?? 0) + this.targetWriteMs - Date.now();
    if (wait > 0) {
      note.timer = setTimeout(() => {
        note.timer = undefined;
        this.syncTarget(kind, key);
      }, wait);
      note.timer.unref();
      return;
    }
    this.write(kind, key, count).catch((err) => this.fail(err));
  }

  /** Hook for the parking lot: a key's count changed. */
  onCount(kind: ParkKind, key: string, count: number): void {
    const k = `${kind} ${key}`;
    clearTimeout(this.pendingDeletes.get(k));
    this.pendingDeletes.delete(k);
    if (count === 0) {
      const t = setTimeout(() => {
        this.pendingDeletes.delete(k);
        this.written.delete(k);
        clearTimeout(this.targets.get(k)?.timer);
        this.targets.delete(k);
        this.store.deletePark(kind, key, this.relayId).catch((err) => this.fail(err));
      }, PARK_RECORD_LINGER_MS);
      t.unref();
      this.pendingDeletes.set(k, t);
    } else if (!this.written.has(k) || kind === 'http') {
      // HTTP records also carry the newest code step, which the code-reuse rule reads.
      this.written.add(k);
      this.write(kind, key, count).catch((err) => this.fail(err));
    } else this.syncTarget(kind, key);
  }

  private readonly lookups = new Map<string, { at: number; records: Promise<ParkRecord[]> }>();

  /**
   * Live records of other relays for (kind, key). Every mobile client waiting for one key on this
   * relay shares one store query per OTHERS_CACHE_MS instead of each polling on its own.
   */
  others(kind: ParkKind, key: string): Promise<ParkRecord[]> {
    return this.live(kind, key).then((all) =>
      all.filter((r) => r.relayId !== this.relayId && this.sameRegion(r)),
    );
  }

  /** Live records of relays in other regions that name their public HTTP URL (freshest first). */
  elsewhere(kind: ParkKind, key: string): Promise<ParkRecord[]> {
    return this.live(kind, key).then((all) => all.filter((r) => !this.sameRegion(r) && r.httpUrl));
  }

  /** Every live record for (kind, key), one shared store query per OTHERS_CACHE_MS. */
  private live(kind: ParkKind, key: string): Promise<ParkRecord[]> {
    const k = `${kind} ${key}`;
    const now = Date.now();
    const cached = this.lookups.get(k);
    if (cached && now - cached.at < OTHERS_CACHE_MS) return cached.records;
    const records = this.store.listParks(kind, key);
    records.catch(() => this.lookups.delete(k));
    if (this.lookups.size > 10_000) this.lookups.clear();
    this.lookups.set(k, { at: now, records });
    return records;
  }

  /** Deletes every record this relay wrote, and says it is no longer alive (drain). */
  async removeAll(): Promise<void> {
    clearInterval(this.timer);
    clearInterval(this.heartbeat);
    for (const t of this.pendingDeletes.values()) clearTimeout(t);
    this.pendingDeletes.clear();
    const jobs: Promise<void>[] = [];
    for (const k of this.written) {
      const [kind, key] = k.split(' ') as [ParkKind, string];
      jobs.push(this.store.deletePark(kind, key, this.relayId).catch((err) => this.fail(err)));
    }
    this.written.clear();
    for (const note of this.targets.values()) clearTimeout(note.timer);
    this.targets.clear();
    jobs.push(
      this.store
        .putRelayHeartbeat(this.relayId, Date.now())
        .catch((err) => this.fail(err, 'relay heartbeat write failed')),
    );
    await Promise.all(jobs);
  }

  /** Stops refreshing. */
  stop(): void {
    clearInterval(this.timer);
    clearInterval(this.heartbeat);
    for (const t of this.pendingDeletes.values()) clearTimeout(t);
    for (const note of this.targets.values()) clearTimeout(note.timer);
  }

  private async write(kind: ParkKind, key: string, count: number): Promise<void> {
    const rec: ParkRecord = {
      relayId: this.relayId,
      peer: this.peer,
      count,
      expiresAt: Math.floor(Date.now() / 1000) + this.ttlSeconds,
    };
    if (kind === 'http') rec.step = this.lot?.newestStep(key);
    if (this.origin.region) rec.region = this.origin.region;
    if (this.origin.httpUrl) rec.httpUrl = this.origin.httpUrl;
    const shown = kind === 'http' ? this.origin.httpAddress : this.origin.address;
    if (shown) rec.address = shown;
    if (kind === 'generic' && this.origin.direct) rec.direct = this.origin.direct;
    const note = this.targets.get(`${kind} ${key}`);
    if (note) {
      Object.assign(rec, { target: note.state, targetSince: note.since, targetAt: note.at });
      note.written = note.state;
      note.writtenAt = Date.now();
    }
    await this.store.putPark(kind, key, rec);
  }

  private refreshing = false;

  /** Rewrites this tick's share of the records (keys that left meanwhile are skipped). */
  private async refresh(generic: Rotation, http: Rotation): Promise<void> {
    const lot = this.lot;
    if (!lot || this.refreshing) return;
    this.refreshing = true;
    try {
      for (const [kind, rotation] of [
        ['generic', generic],
        ['http', http],
      ] as const) {
        for (const key of rotation.take(() => lot.keys(kind))) {
          const count = lot.count(kind, key);
          if (count > 0) await this.write(kind, key, count).catch((err) => this.fail(err));
        }
      }
      // Reports for keys that never parked (the park was refused after the report) go.
      for (const [k, note] of this.targets)
        if (!this.written.has(k)) {
          clearTimeout(note.timer);
          this.targets.delete(k);
        }
    } finally {
      this.refreshing = false;
    }
  }

  private fail(err: unknown, what = 'park record write failed'): void {
    this.log.warn(what, { reason: (err as Error).message });
  }
}
