/**
 * The per-identity bandwidth cap (issue 30, `limits.bytesPerSecond`: bytes per second, both
 * directions together, over all of the identity's rendezvous).
 *
 * On one relay: a token bucket per capped identity, shared by all of that identity's rendezvous
 * whose mobile client reached this relay (the contracts' rule: the holder of a peer-linked
 * rendezvous neither meters nor throttles it), both directions, both protocols. Each direction of
 * such a splice passes through a `Throttle` (a Transform) inserted in front of whatever the splice
 * already pipes into (the HTTP port's gates): it holds a chunk until its bucket grants it, so the
 * Transform's bounded buffer fills and `pipe` pauses the source — backpressure, never an unbounded
 * queue. The bucket serves its waiting throttles round robin, 16 KiB at a time, so concurrent
 * rendezvous and both directions share the rate evenly (a throttle alone takes what the tokens cover). An identity without a cap gets no
 * Throttle at all; a cap set, changed or removed later reaches running rendezvous (a Throttle is
 * inserted into the live pipes, or its bucket's rate changes).
 *
 * Burst: BURST_SECONDS (0.2 s) of the rate. Small, so one relay never exceeds the cap by more
 * than a fifth of a second's worth, and the split across relays (below) is not undone by each
 * relay's own burst; not smaller, because tokens beyond the burst are lost when a timer fires late
 * (an event loop busy for 200 ms on a loaded relay would otherwise lose rate), and an interactive
 * exchange (a screen of a shell) should pass at once.
 *
 * Across relays (approximately): every relay carrying capped traffic of an identity refreshes a
 * lease in the store every `leaseMs` (server/store/bandwidth.ts: the bytes/s it carried, whether
 * it was held back), reads the others', and runs its bucket at its max-min fair share of the cap:
 * relays that were not held back keep what they used, the rest is split evenly among those that
 * were (this relay counted among them, so it may grow). It converges within two refreshes; while
 * demand moves, the total may exceed the cap for up to one refresh. docs/capacity.md has the costs.
 */
import { type Duplex, Transform, type TransformCallback } from 'node:stream';
import type { Log } from '../core/log.js';
import type { BandwidthLease, Store } from '../server/store/index.js';
import type { IdentityLimits } from '../server/usage-types.js';
import type { RendezvousStart } from './telemetry.js';

/** Seconds of the rate a bucket may hold (its burst). */
export const BURST_SECONDS = 0.2;
/** Bytes a throttle sends per turn at most (round robin between an identity's streams). */
export const SLICE_BYTES = 16 * 1024;
/** How often a relay refreshes its lease per capped identity it carries (RELAY_BANDWIDTH_LEASE_MS). */
export const BANDWIDTH_LEASE_MS = 5_000;
/** A lease not refreshed for this many periods is ignored (its relay stopped or died). */
const LEASE_PERIODS = 3;

/** Where limits come from: relay/identity-limits.ts's IdentityLimitsCache (`ctx.identityLimits`). */
export interface LimitsSource {
  peek(uuid: string): IdentityLimits | undefined;
  /** True when `peek` is the answer (read and fresh): no read needed to know there is no cap. */
  fresh?(uuid: string): boolean;
  get(uuid: string): Promise<IdentityLimits | undefined>;
  onChange(cb: (uuid: string, limits: IdentityLimits | undefined) => void): void;
}

/** The relay's options of the bandwidth caps (part of RelayOptions). */
export interface BandwidthRelayOptions {
  /** How often a lease per capped identity is refreshed (default 5 s; RELAY_BANDWIDTH_LEASE_MS). */
  bandwidthLeaseMs?: number;
}

/** How a relay's bandwidth caps are built. */
export interface BandwidthOptions extends BandwidthRelayOptions {
  relayId: string;
  limits: LimitsSource;
  store: Pick<Store, 'refreshBandwidthLease' | 'dropBandwidthLease'>;
  log: Log;
}

/** The streams of one live splice (relay/splices.ts): the sockets and the filters they pipe into. */
export interface SplicePipes {
  hidden: Duplex;
  mobile: Duplex;
  /** What `mobile` pipes into (the HTTP request gate), else `hidden`. */
  intoHidden?: Duplex;
  /** What `hidden` pipes into (the HTTP response gate), else `mobile`. */
  intoMobile?: Duplex;
}

/**
 * A relay's max-min fair share of `cap` (bytes/s), given the other relays' leases: a relay not
 * held back is given what it used, the rest is split evenly among the others and this one.
 */
export function shareOf(cap: number, others: readonly Pick<BandwidthLease, 'used' | 'limited'>[]): number {
  const demands = others.map((l) => (l.limited ? Number.POSITIVE_INFINITY : Math.max(0, l.used)));
  demands.sort((a, b) => a - b);
  let left = cap;
  let n = demands.length + 1;
  for (const d of demands) {
    const fair = left / n;
    if (d >= fair) return fair;
    left -= d;
    n--;
  }
  return left;
}

/** One direction of one capped splice: holds each chunk until its bucket grants it. */
class Throttle extends Transform {
  /** In the bucket's queue. */
  queued = false;
  private pending: Buffer | undefined;
  private offset = 0;
  private done: TransformCallback | undefined;

  constructor(private readonly bucket: Bucket) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.pending = chunk;
    this.offset = 0;
    this.done = cb;
    this.bucket.request(this);
  }

  /** Sends up to `max` bytes of the held chunk; returns how many. Completes the chunk when sent. */
  grant(max: number): number {
    const chunk = this.pending;
    if (!chunk) return 0;
    const n = Math.min(max, chunk.length - this.offset);
    this.push(this.offset === 0 && n === chunk.length ? chunk : chunk.subarray(this.offset, this.offset + n));
    this.offset += n;
    if (this.offset >= chunk.length) {
      this.pending = undefined;
      const cb = this.done;
      this.done = undefined;
      cb?.();
    }
    return n;
  }

  /** True while a chunk waits (partly) unsent. */
  get waiting(): boolean {
    return this.pending !== undefined;
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.pending = undefined;
    this.done = undefined;
    this.bucket.remove(this);
    cb(err);
  }
}

/** One identity's token bucket on this relay. */
class Bucket {
  /** The identity's cap (bytes/s, all relays together); undefined: no cap (throttles pass through). */
  cap: number | undefined;
  /** This relay's share of the cap, bytes/s. */
  rate = Number.POSITIVE_INFINITY;
  /** Splices attached (the bucket and its lease go with the last). */
  splices = 0;
  /** Bytes granted since the last lease refresh, and whether a throttle had to wait. */
  used = 0;
  limited = false;
  /** This relay holds a lease for the identity; a refresh is running; none was written yet. */
  leased = false;
  refreshing = false;
  fresh = true;
  /** Epoch ms before which traffic resuming does not start a refresh of its own. */
  retryAt = 0;
  /** Called when bytes pass while no lease is held (traffic resumed: write one now). */
  wake: (() => void) | undefined;
  private tokens = 0;
  private last = performance.now();
  private readonly queue: Throttle[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  /** Sets this relay's share (bytes/s); what is held waits by the new rate from now on. */
  setRate(rate: number): void {
    this.refill();
    this.rate = rate;
    this.tokens = Math.min(this.tokens, this.burst());
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.run();
  }

  /** A throttle holds a chunk: queue it and serve. */
  request(t: Throttle): void {
    if (!t.queued) {
      t.queued = true;
      this.queue.push(t);
    }
    if (!this.timer) this.run();
  }

  /** A throttle is gone (its splice ended). */
  remove(t: Throttle): void {
    if (!t.queued) return;
    t.queued = false;
    const i = this.queue.indexOf(t);
    if (i >= 0) this.queue.splice(i, 1);
  }

  /** Stops the timer (the bucket is dropped). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }

  private burst(): number {
    return this.rate * BURST_SECONDS;
  }

  /** A turn's bytes: SLICE_BYTES, less under small caps (at most a burst, at least 1 KiB: smooth). */
  private slice(): number {
    return Math.min(SLICE_BYTES, Math.max(1024, this.burst()));
  }

  private refill(): void {
    const now = performance.now();
    if (Number.isFinite(this.rate))
      this.tokens = Math.min(this.burst(), this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
  }

  /**
   * Grants slices round robin while tokens last (a slice may overdraw: the debt is waited out
   * before the next), then sleeps until the debt is paid. Re-entered from a grant (a completed
   * chunk's callback brings the next chunk), it only queues.
   */
  private run(): void {
    if (this.running) return;
    this.running = true;
    this.timer = undefined;
    this.refill();
    const unlimited = !Number.isFinite(this.rate);
    while (this.queue.length > 0 && (unlimited || this.tokens > 0)) {
      const t = this.queue.shift() as Throttle;
      t.queued = false;
      // Turns of SLICE_BYTES only while others wait: alone, a throttle takes what the tokens cover
      // (a whole socket read in one push, as without a throttle).
      const n = t.grant(
        unlimited
          ? Number.POSITIVE_INFINITY
          : this.queue.length > 0
            ? this.slice()
            : Math.max(this.slice(), this.tokens),
      );
      this.used += n;
      if (!unlimited) this.tokens -= n;
      if (!this.leased && !this.refreshing && n > 0) this.wake?.();
      if (t.waiting && !t.queued && !t.destroyed) {
        t.queued = true;
        this.queue.push(t);
      }
    }
    this.running = false;
    if (this.queue.length > 0 && !unlimited) {
      this.limited = true;
      const ms = Math.max(1, Math.ceil(((1 - this.tokens) * 1000) / this.rate));
      this.timer = setTimeout(() => this.run(), ms);
    }
  }
}

/** The live splices of one identity (capped or not: a cap set later reaches them). */
interface Live {
  pipes: SplicePipes;
  throttles?: [Throttle, Throttle];
}

/** A relay's bandwidth caps: the buckets of capped identities and their leases. */
export class Bandwidth {
  private readonly buckets = new Map<string, Bucket>();
  private readonly live = new Map<string, Set<Live>>();
  private readonly leaseMs: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: BandwidthOptions) {
    this.leaseMs = opts.bandwidthLeaseMs || BANDWIDTH_LEASE_MS;
    opts.limits.onChange((uuid, limits) => this.changed(uuid, limits?.bytesPerSecond));
  }

  /**
   * A splice began: throttles it if its identity has a cap and its mobile client reached this
   * relay (else it only watches for a cap set later). Returns what to call when the splice ends.
   */
  attach(r: RendezvousStart, pipes: SplicePipes): (() => void) | undefined {
    if (r.source === undefined || r.mobileRelayId !== this.opts.relayId) return undefined;
    const uuid = r.uuid;
    const entry: Live = { pipes };
    let set = this.live.get(uuid);
    if (!set) {
      set = new Set();
      this.live.set(uuid, set);
    }
    set.add(entry);
    const known = this.opts.limits.peek(uuid);
    if (known?.bytesPerSecond) this.throttle(uuid, entry, known.bytesPerSecond);
    else if (known === undefined && !this.opts.limits.fresh?.(uuid))
      // Not read yet (or no limits): once read, a cap applies to this splice if it still runs.
      this.opts.limits.get(uuid).then(
        (l) => {
          if (l?.bytesPerSecond && set.has(entry) && !entry.throttles) this.changed(uuid, l.bytesPerSecond);
        },
        () => {},
      );
    return () => this.detach(uuid, entry);
  }

  /** The uuids with a bucket on this relay (tests, the console). */
  capped(): string[] {
    return [...this.buckets.keys()];
  }

  /** Stops the lease refreshes (the relay drains). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** A cap was set, changed or removed: running splices of `uuid` follow. */
  private changed(uuid: string, cap: number | undefined): void {
    const bucket = this.buckets.get(uuid);
    if (bucket) {
      const before = bucket.cap;
      bucket.cap = cap || undefined;
      // The share scales with the cap at once; the next lease read corrects it.
      bucket.setRate(
        cap ? Math.min(cap, before ? (bucket.rate * cap) / before : cap) : Number.POSITIVE_INFINITY,
      );
      if (cap) void this.refresh(uuid, bucket);
      else if (bucket.leased) {
        bucket.leased = false;
        this.drop(uuid);
      }
    }
    if (!cap) return;
    for (const entry of this.live.get(uuid) ?? []) if (!entry.throttles) this.throttle(uuid, entry, cap);
  }

  private detach(uuid: string, entry: Live): void {
    const set = this.live.get(uuid);
    if (!set?.delete(entry)) return;
    if (set.size === 0) this.live.delete(uuid);
    if (!entry.throttles) return;
    for (const t of entry.throttles) t.destroy();
    const bucket = this.buckets.get(uuid);
    if (!bucket || --bucket.splices > 0) return;
    bucket.stop();
    this.buckets.delete(uuid);
    if (bucket.leased) this.drop(uuid);
    if (this.buckets.size === 0) this.stop();
  }

  /** Inserts a throttle into each direction of a live splice, in front of its filters. */
  private throttle(uuid: string, entry: Live, cap: number): void {
    const { hidden, mobile, intoHidden, intoMobile } = entry.pipes;
    if (hidden.destroyed || mobile.destroyed) return;
    let bucket = this.buckets.get(uuid);
    if (!bucket) {
      bucket = new Bucket();
      bucket.cap = cap;
      // Alone until the first lease read says otherwise (one store round trip away).
      bucket.setRate(cap);
      this.buckets.set(uuid, bucket);
      const b = bucket;
      // At most one such refresh per period (a failing store is not asked once per slice).
      b.wake = () => {
        if (Date.now() >= b.retryAt) void this.refresh(uuid, b);
      };
      void this.refresh(uuid, bucket);
      this.startLeases();
    }
    bucket.splices++;
    const toHidden = new Throttle(bucket);
    const toMobile = new Throttle(bucket);
    entry.throttles = [toHidden, toMobile];
    insert(mobile, intoHidden ?? hidden, toHidden);
    insert(hidden, intoMobile ?? mobile, toMobile);
  }

  private startLeases(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      for (const [uuid, bucket] of this.buckets) void this.refresh(uuid, bucket);
    }, this.leaseMs);
    this.timer.unref();
  }

  /**
   * One lease refresh of `uuid`: only while this relay carries its capped traffic (bytes moved or
   * held back since the last one); a bucket idle for a whole period drops its lease instead.
   */
  private async refresh(uuid: string, bucket: Bucket): Promise<void> {
    if (bucket.refreshing || !bucket.cap) return;
    const active = bucket.used > 0 || bucket.limited || bucket.fresh;
    bucket.fresh = false;
    if (!active) {
      if (bucket.leased) {
        bucket.leased = false;
        bucket.setRate(bucket.cap);
        this.drop(uuid);
      }
      return;
    }
    const now = Date.now();
    bucket.retryAt = now + this.leaseMs;
    const lease: BandwidthLease = {
      relayId: this.opts.relayId,
      used: (bucket.used * 1000) / this.leaseMs,
      limited: bucket.limited,
      liveUntil: now + LEASE_PERIODS * this.leaseMs,
    };
    bucket.used = 0;
    bucket.limited = false;
    bucket.refreshing = true;
    try {
      const leases = await this.opts.store.refreshBandwidthLease(uuid, lease, now);
      if (this.buckets.get(uuid) !== bucket || !bucket.cap) {
        // Its last splice ended, or the cap went, while the write was on its way: the lease
        // written must not outlive them (unless a newer bucket of the uuid holds it again).
        if (!this.buckets.get(uuid)?.leased) this.drop(uuid);
        return;
      }
      bucket.leased = true;
      const others = leases.filter((l) => l.relayId !== this.opts.relayId);
      bucket.setRate(shareOf(bucket.cap, others));
    } catch (err) {
      // The last share stays: a store outage must not lift (or tighten) the cap.
      this.opts.log.warn('bandwidth lease not refreshed', { uuid, error: (err as Error).message });
    } finally {
      bucket.refreshing = false;
    }
  }

  private drop(uuid: string): void {
    this.opts.store.dropBandwidthLease(uuid, this.opts.relayId).catch(() => {
      // It lapses by itself after LEASE_PERIODS periods.
    });
  }
}

/** Puts `t` between `src` and what it pipes into, keeping the pipe's backpressure and end. */
function insert(src: Duplex, next: Duplex, t: Throttle): void {
  // A throttle error (none expected) ends the splice like a socket error: an abort both ways.
  t.on('error', () => {
    src.destroy();
    next.destroy();
  });
  if (src.readableEnded || next.writableEnded) return;
  src.unpipe(next);
  src.pipe(t).pipe(next);
}
