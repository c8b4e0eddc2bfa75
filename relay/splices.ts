/**
 * The live splices of one relay: each counted in all (drain waits for them) and per hidden server
 * (the cap), its mobile socket given keepalive if it lasts, ended after the idle timeout, and
 * recorded once at its end. Those whose hidden server is parked on this relay are also listed
 * per uuid with the identity generation it parked in, so that a revocation (rotate, disable)
 * ends them as it ends parks (relay/revalidate.ts).
 */
import type { Duplex } from 'node:stream';
import type { Log } from '../core/log.js';
import { reset, type SpliceHandle, splice } from '../core/splice.js';
import type { Bandwidth } from './bandwidth.js';
import type { SpliceFilters } from './context.js';
import type { KeepAlive } from './keepalive.js';
import type { SplicesPerUuid } from './limits.js';
import type { Meter } from './metering.js';
import { parkedGeneration } from './parking.js';
import type { RelayTelemetry, RendezvousStart } from './telemetry.js';

/** What the splices of one relay share. */
export interface SplicesOptions {
  perUuid: SplicesPerUuid;
  keepAlive: KeepAlive;
  /** A splice with no byte either way for this long is ended (0: never). */
  idleTimeoutMs: number;
  telemetry: RelayTelemetry;
  log: Log;
  /** Usage per identity (absent: metering off). */
  meter?: Meter;
  /** Per-identity bandwidth caps (relay/bandwidth.ts). */
  bandwidth?: Bandwidth;
}

/** A live splice whose hidden server was parked here: what a revocation needs to end it. */
interface Revocable {
  generation: number;
  end(reason: string): void;
}

/** The live splices of one relay. */
export class Splices {
  private live = 0;
  private readonly byUuid = new Map<string, Set<Revocable>>();

  constructor(private readonly opts: SplicesOptions) {}

  /** Live splices. */
  get count(): number {
    return this.live;
  }

  /** The uuids with live splices whose hidden server was parked on this relay. */
  uuids(): string[] {
    return [...this.byUuid.keys()];
  }

  /** True when `uuid` has a live splice whose hidden server was parked here. */
  has(uuid: string): boolean {
    return this.byUuid.has(uuid);
  }

  /**
   * Ends the live splices of `uuid` (parked here) whose generation `stale` rejects, both sides at
   * once; each is recorded as ended `revoked` with `reason`. Returns how many were ended.
   */
  revoke(uuid: string, stale: (generation: number) => boolean, reason: string): number {
    let n = 0;
    for (const r of [...(this.byUuid.get(uuid) ?? [])]) {
      if (!stale(r.generation)) continue;
      r.end(reason);
      n++;
    }
    return n;
  }

  /**
   * Splices a hidden server's stream with a mobile client's (or a peer link's) socket. The
   * filters see the bytes of one direction each.
   */
  readonly spliceHidden = (
    hidden: Duplex,
    mobile: Duplex,
    rendezvous: RendezvousStart,
    filters: SpliceFilters = {},
  ): void => {
    const { perUuid, keepAlive, idleTimeoutMs, telemetry, log } = this.opts;
    this.live++;
    const release = perUuid.add(rendezvous.uuid, rendezvous.source);
    keepAlive.soon(mobile);
    // Only a hidden server parked here carries its generation: a peer link's holder revokes it.
    const generation = parkedGeneration(hidden);
    let revoked: string | undefined;
    const revocable: Revocable | undefined =
      generation === undefined
        ? undefined
        : {
            generation,
            end: (reason) => {
              revoked ??= reason;
              // An abort (RST) both ways: neither end may take it for a complete exchange.
              reset(hidden);
              reset(mobile);
            },
          };
    if (revocable) this.track(rendezvous.uuid, revocable, true);
    let metered: (() => void) | undefined;
    let unthrottle: (() => void) | undefined;
    const handle = splice(
      hidden,
      mobile,
      (end) => {
        keepAlive.forget(mobile);
        metered?.();
        unthrottle?.();
        release();
        if (revocable) this.track(rendezvous.uuid, revocable, false);
        this.live--;
        telemetry.ended(rendezvous, end, revoked);
      },
      {
        countBytes: true,
        idleMs: idleTimeoutMs,
        onIdle: () =>
          log.info('idle splice ended', { rid: rendezvous.rid, uuid: rendezvous.uuid, idleTimeoutMs }),
        intoA: filters.intoHidden,
        intoB: filters.intoMobile,
      },
    );
    // onDone never runs synchronously inside splice(), so the meter sees the end of what it began.
    metered = this.opts.meter?.begin(rendezvous, billed(handle, filters.carriedToHidden));
    // After the pipes exist: a capped identity's throttles go in front of them (relay/bandwidth.ts).
    unthrottle = this.opts.bandwidth?.attach(rendezvous, { hidden, mobile, ...filters });
  };

  private track(uuid: string, r: Revocable, live: boolean): void {
    let set = this.byUuid.get(uuid);
    if (live) {
      if (!set) {
        set = new Set();
        this.byUuid.set(uuid, set);
      }
      set.add(r);
    } else if (set) {
      set.delete(r);
      if (set.size === 0) this.byUuid.delete(uuid);
    }
  }
}

/**
 * The splice's counters as the meter bills them: towards the hidden server, what the filter
 * passed on since the splice began (when it says), else what was read from the mobile side.
 */
function billed(handle: SpliceHandle, carried?: () => number): SpliceHandle {
  if (!carried) return handle;
  const base = carried();
  return { bytes: () => ({ fromA: handle.bytes().fromA, fromB: carried() - base }) };
}
