/**
 * This relay's park records in the store — the cluster's way of finding which relay holds a
 * parked socket — and its heartbeat, which says whether any of them is to be believed.
 *
 * At rest this costs the store one heartbeat write per relay per RELAY_HEARTBEAT_MS, not a write
 * per key: a key's record is written when its first socket parks, rewritten only when what it says
 * changes (the agent's target, the socket count: at most once per TARGET_WRITE_MS each) or once a
 * day (PARK_RECORD_REFRESH_MS, so its 3-day GC expiry never catches a relay that runs for weeks),
 * and deleted when the last socket leaves. Readers judge every record by its relay's heartbeat
 * (`Store.liveParks`): a relay that died without draining stops being named once its `liveUntil`
 * passes, RELAY_HEARTBEAT_MS + HEARTBEAT_GRACE_MS after its last beat (28 s by default).
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

/**
 * A record a relay keeps holding is rewritten once per this period (a day), spread evenly over
 * it: its GC expiry (PARK_RECORD_TTL_SECONDS, 3 days) stays ahead. 1/1440 of a write per key per
 * minute — negligible against the heartbeat, and counted in the bench's figure.
 */
export const PARK_RECORD_REFRESH_MS = 24 * 3600 * 1000;
/** How often a share of the daily rewrites is done. */
export const PARK_RECORD_TICK_MS = 60_000;
/**
 * A key's record outlives its last parked socket this long: under load a hidden server's pool is
 * empty for moments between rendezvous, and peers asking then should queue here, not give up.
 */
export const PARK_RECORD_LINGER_MS = 2_000;
/**
 * A generic key whose last socket left and that stays empty this long has its record rewritten
 * with count 0 (then deleted at PARK_RECORD_LINGER_MS): the look-up then names a relay that still
 * holds sockets. An agent re-parking after a rendezvous is back well within it, so a hidden server
 * that stays costs no write; one that moved (to its direct address) costs one.
 */
export const EMPTIED_WRITE_MS = 250;
/**
 * How often a relay writes its heartbeat (server/store/relays.ts): the whole store cost of its
 * liveness, whatever it holds.
 */
export const RELAY_HEARTBEAT_MS = 20_000;
/**
 * A heartbeat says "alive until the next beat is due, plus this": a beat may land this late (a
 * slow store: two 3 s attempts) before readers count the relay dead. With the default period a
 * relay killed just after a beat is named for at most 20 + 8 = 28 s.
 */
export const HEARTBEAT_GRACE_MS = 8_000;
/** A failed heartbeat write is tried again after this long (not a whole period later). */
export const HEARTBEAT_RETRY_MS = 2_000;

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
  /** The state the store holds for this key (undefined: none written yet). */
  written?: TargetState;
}

/** What the store holds for a key this relay parks: the count written, when, and a pending write. */
interface Written {
  count: number;
  at: number;
  /** A write waiting for the end of the period (target or count changed inside it). */
  timer?: NodeJS.Timeout;
}

/** Whose records, where they go, and what they carry. */
export interface ParkRecordsOptions {
  store: Pick<Store, 'putPark' | 'deletePark' | 'liveParks' | 'putRelayHeartbeat'>;
  /** This relay's identity in the records. */
  relayId: string;
  /** `host:port` other relays dial ('' for a relay alone: nobody dials it). */
  peer: string;
  log: Log;
  /** Records' GC expiry, past their last write (default PARK_RECORD_TTL_SECONDS). */
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
  private readonly written = new Map<string, Written>();
  private readonly pendingDeletes = new Map<string, NodeJS.Timeout>();
  /** Generic keys emptied just now: their count-0 write, if they stay empty (EMPTIED_WRITE_MS). */
  private readonly pendingEmpty = new Map<string, NodeJS.Timeout>();
  /** Count-0 writes under way: the key's next write or delete waits for it (puts may overtake). */
  private readonly emptied = new Map<string, Promise<void>>();

  /** Runs `job` for key `k` once its count-0 write (if any) is done; failures are logged. */
  private afterEmptied(k: string, job: () => Promise<void>): void {
    const before = this.emptied.get(k);
    this.emptied.delete(k);
    (before ? before.then(job) : job()).catch((err) => this.fail(err));
  }
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

  /**
   * Starts the heartbeat and the daily rewrite over `lot`. Resolves once the first heartbeat was
   * written (or failed: logged, and tried again), so no record of this relay is ever read before
   * its heartbeat exists — a relay without one counts as dead.
   */
  start(lot: ParkingLot): Promise<void> {
    this.lot = lot;
    const refreshMs = Math.min(PARK_RECORD_REFRESH_MS, (this.ttlSeconds * 1000) / 3);
    const tick = Math.min(PARK_RECORD_TICK_MS, refreshMs);
    const generic = new Rotation(refreshMs, tick);
    const http = new Rotation(refreshMs, tick);
    this.timer = setInterval(() => void this.refresh(generic, http), tick);
    this.timer.unref();
    this.heartbeat = setInterval(() => void this.beat(), this.heartbeatMs);
    this.heartbeat.unref();
    return this.beat();
  }

  private stopped = false;
  /** The heartbeat write in flight, if any (a drain's "dead" beat must land after it). */
  private beating: Promise<void> | undefined;

  /** Writes the heartbeat: alive until the next beat is due plus HEARTBEAT_GRACE_MS. */
  private beat(): Promise<void> {
    const p = this.beatOnce();
    this.beating = p;
    return p;
  }

  private async beatOnce(): Promise<void> {
    try {
      await this.store.putRelayHeartbeat(this.relayId, Date.now() + this.heartbeatMs + HEARTBEAT_GRACE_MS);
    } catch (err) {
      this.fail(err, 'relay heartbeat write failed');
      // Soon, not a whole period later: the grace is shorter than a period.
      if (!this.stopped && this.heartbeatMs > 2 * HEARTBEAT_RETRY_MS)
        setTimeout(() => {
          if (!this.stopped) void this.beat();
        }, HEARTBEAT_RETRY_MS).unref();
    }
  }

  /**
   * An agent parking on `key` reported its target `up` or `down`. Kept with the key and written
   * into its park record only when the state changes (agents repeat it on every park); the write
   * carries the newest report time.
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
    this.sync(kind, key);
  }

  /**
   * Rewrites a parked key's record when what it says changed — the agent's target state, or the
   * number of sockets parked — at most once per `targetWriteMs` per key (a change inside the
   * period is written at its end, if it still differs then). An agent reports a change by
   * re-parking, so the report often arrives while its count is 0 (between the old sockets' close
   * and the new ones' park): then the next park's write carries it (onCount).
   */
  private sync(kind: ParkKind, key: string): void {
    const k = `${kind} ${key}`;
    const w = this.written.get(k);
    if (!w || w.timer) return;
    const count = this.lot?.count(kind, key) ?? 0;
    if (count === 0) return;
    const note = this.targets.get(k);
    if (count === w.count && (!note || note.written === note.state)) return;
    const wait = w.at + this.targetWriteMs - Date.now();
    if (wait > 0) {
      w.timer = setTimeout(() => {
        w.timer = undefined;
        this.sync(kind, key);
      }, wait);
      w.timer.unref();
      return;
    }
    this.write(kind, key, count).catch((err) => this.fail(err));
  }

  /** Hook for the parking lot: a key's count changed. */
  onCount(kind: ParkKind, key: string, count: number): void {
    const k = `${kind} ${key}`;
    clearTimeout(this.pendingDeletes.get(k));
    this.pendingDeletes.delete(k);
    clearTimeout(this.pendingEmpty.get(k));
    this.pendingEmpty.delete(k);
    const w = this.written.get(k);
    if (count === 0 && kind === 'generic' && w && w.count > 0) {
      const t = setTimeout(() => {
        this.pendingEmpty.delete(k);
        if (this.written.get(k) === w && this.lot?.count(kind, key) === 0)
          this.emptied.set(
            k,
            this.write(kind, key, 0).catch((err) => this.fail(err)),
          );
      }, EMPTIED_WRITE_MS);
      t.unref();
      this.pendingEmpty.set(k, t);
    }
    if (count === 0) {
      const t = setTimeout(() => {
        this.pendingDeletes.delete(k);
        clearTimeout(this.written.get(k)?.timer);
        this.written.delete(k);
        this.targets.delete(k);
        this.afterEmptied(k, () => this.store.deletePark(kind, key, this.relayId));
      }, PARK_RECORD_LINGER_MS);
      t.unref();
      this.pendingDeletes.set(k, t);
    } else if (!w || kind === 'http' || w.count === 0) {
      // HTTP records also carry the newest code step, which the code-reuse rule reads; a generic
      // record that says 0 (emptied, lingering) must say at once that sockets are back.
      clearTimeout(this.written.get(k)?.timer);
      this.written.set(k, { count, at: Date.now() });
      this.afterEmptied(k, () => this.write(kind, key, count));
    } else this.sync(kind, key);
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
    // Records of relays whose heartbeat lapsed are not dialled (Store.liveParks).
    const records: Promise<ParkRecord[]> = this.store.liveParks(kind, key);
    records.catch(() => this.lookups.delete(k));
    if (this.lookups.size > 10_000) this.lookups.clear();
    this.lookups.set(k, { at: now, records });
    return records;
  }

  /** Deletes every record this relay wrote, and says it is no longer alive (drain). */
  async removeAll(): Promise<void> {
    this.stop();
    this.pendingDeletes.clear();
    for (const t of this.pendingEmpty.values()) clearTimeout(t);
    this.pendingEmpty.clear();
    const jobs: Promise<void>[] = [];
    for (const k of this.written.keys()) {
      const [kind, key] = k.split(' ') as [ParkKind, string];
      jobs.push(this.store.deletePark(kind, key, this.relayId).catch((err) => this.fail(err)));
    }
    this.written.clear();
    this.targets.clear();
    await this.beating;
    jobs.push(
      this.store
        .putRelayHeartbeat(this.relayId, Date.now())
        .catch((err) => this.fail(err, 'relay heartbeat write failed')),
    );
    await Promise.all(jobs);
  }

  /** Stops the heartbeat and the rewrites. */
  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    clearInterval(this.heartbeat);
    for (const t of this.pendingDeletes.values()) clearTimeout(t);
    for (const t of this.pendingEmpty.values()) clearTimeout(t);
    for (const w of this.written.values()) clearTimeout(w.timer);
  }

  private async write(kind: ParkKind, key: string, count: number): Promise<void> {
    const now = Date.now();
    const rec: ParkRecord = {
      relayId: this.relayId,
      peer: this.peer,
      count,
      expiresAt: Math.floor(now / 1000) + this.ttlSeconds,
    };
    if (kind === 'http') rec.step = this.lot?.newestStep(key);
    if (this.origin.region) rec.region = this.origin.region;
    if (this.origin.httpUrl) rec.httpUrl = this.origin.httpUrl;
    const shown = kind === 'http' ? this.origin.httpAddress : this.origin.address;
    if (shown) rec.address = shown;
    if (kind === 'generic' && this.origin.direct) rec.direct = this.origin.direct;
    const k = `${kind} ${key}`;
    const note = this.targets.get(k);
    if (note) {
      Object.assign(rec, { target: note.state, targetSince: note.since, targetAt: note.at });
      note.written = note.state;
    }
    const w = this.written.get(k);
    if (w) Object.assign(w, { count, at: now });
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
      for (const k of this.targets.keys()) if (!this.written.has(k)) this.targets.delete(k);
    } finally {
      this.refreshing = false;
    }
  }

  private fail(err: unknown, what = 'park record write failed'): void {
    this.log.warn(what, { reason: (err as Error).message });
  }
}
