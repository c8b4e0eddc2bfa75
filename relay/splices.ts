/**
 * The live splices of one relay: each counted in all (drain waits for them) and per hidden server
 * (the cap), its mobile socket given keepalive if it lasts, ended after the idle timeout, and
 * recorded once at its end.
 */
import type { Duplex } from 'node:stream';
import type { Log } from '../core/log.js';
import { splice } from '../core/splice.js';
import type { SpliceFilters } from './context.js';
import type { KeepAlive } from './keepalive.js';
import type { SplicesPerUuid } from './limits.js';
import type { RelayTelemetry, RendezvousStart } from './telemetry.js';

/** What the splices of one relay share. */
export interface SplicesOptions {
  perUuid: SplicesPerUuid;
  keepAlive: KeepAlive;
  /** A splice with no byte either way for this long is ended (0: never). */
  idleTimeoutMs: number;
  telemetry: RelayTelemetry;
  log: Log;
}

/** The live splices of one relay. */
export class Splices {
  private live = 0;

  constructor(private readonly opts: SplicesOptions) {}

  /** Live splices. */
  get count(): number {
    return this.live;
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
    splice(
      hidden,
      mobile,
      (end) => {
        keepAlive.forget(mobile);
        release();
        this.live--;
        telemetry.ended(rendezvous, end);
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
  };
}
