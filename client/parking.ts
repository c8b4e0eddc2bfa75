/**
 * What a park attempt is, whatever the protocol: it runs with a `ParkContext` (the agent's state
 * it may read and the few things it may tell the agent) and ends with a `ParkOutcome` that the
 * agent's pool loop acts on — hand the socket over, park again, back off, or stop.
 */
import type { Socket } from 'node:net';
import type { RendezvousError } from '../core/errors.js';
import type { Log, LogFields } from '../core/log.js';
import type { TargetState } from '../core/relay-line.js';
import type { ParkCause } from './agent-report.js';
import type { OneTimeCodes } from './codes.js';
import type { HiddenServerOptions } from './options.js';

/** Why a slot parks next, as its next `park` report says. */
export interface NextPark {
  after: ParkCause;
  reason?: string;
}

/**
 * How one park attempt ended:
 * - `paired`: a rendezvous — the socket (early bytes unread) and its rid, if the relay sent one;
 * - `again`: park again at once — the park was ended on purpose, or a credential must be renewed;
 * - `retry`: park again after the back-off (or the `retryAfter` seconds the relay asked for) — a
 *   failure, a transient refusal, or a refused registration (the parker has already dropped it,
 *   so the next attempt registers again). `message` is the warning logged; without it the pause
 *   is a quiet shortest wait (a park the relay closed);
 * - `fatal`: give up — the secret or the request is wrong;
 * - `quota`: the identity's monthly quota is spent — the parker told `quotaExceeded` already, and
 *   the slot waits with the pool (client/quota-hold.ts), not on its back-off;
 * - `stopped`: the agent stopped meanwhile.
 *
 * `fresh`: the attempt got far enough (parked a while, or was accepted) that the slot's back-off
 * starts afresh.
 */
export type ParkOutcome = { fresh?: boolean } & (
  | { kind: 'paired'; socket: Socket; relay: string; rid?: string }
  | { kind: 'again'; cause?: NextPark }
  | {
      kind: 'retry';
      cause: NextPark & { reason: string };
      message?: string;
      fields?: LogFields;
      retryAfter?: number;
    }
  | { kind: 'fatal'; error: RendezvousError }
  | { kind: 'quota' }
  | { kind: 'stopped' }
);

/** What a park attempt may read of its agent, and tell it. */
export interface ParkContext {
  readonly opts: HiddenServerOptions;
  /** Aborted when the agent stops: ends pending API calls, relay connects and status reads at once. */
  readonly signal: AbortSignal;
  readonly codes: OneTimeCodes;
  readonly log: Log;
  /** True once the agent stopped. */
  stopped(): boolean;
  /** The agent's knowledge of its target now. */
  target(): TargetState | undefined;
  /** `socket` waits at `relay`; `recycle` ends that park so the slot parks again with news of the target. */
  hold(socket: Socket, relay: string, recycle: () => void): void;
  /** `socket` no longer waits (paired, closed or failed). */
  release(socket: Socket): void;
  /** Slot `slot` parked at `relay`, having told it `target`: reported and logged, `'parked'` emitted. */
  parked(slot: number, relay: string, target: TargetState | undefined): void;
  /** The first registration (or the first accepted CONNECT): logged and emitted as `'registered'`. */
  registered(info: { host: string; port: number } | { relay: string }): void;
  /** The pool is to keep `size` slots only (the rest stop): `why` is warned once. */
  shrinkPool(size: number, why: string): void;
  /**
   * The relay (or API) refused `slot` for quota: said once per wait (a WARN line, `'quota'`
   * emitted), and the pool's wait starts before the parker lets another slot dial.
   */
  quotaExceeded(slot: number, error: RendezvousError): void;
  /** Resolves when `slot` may dial (at once, unless a quota wait is on); true when it waited. */
  admit(slot: number): Promise<boolean>;
  /** A transient failure: logged with `fields` and the wait, `'reconnecting'` emitted, then the wait. */
  retryLater(wait: number, message: string, reason: string, fields?: LogFields): Promise<void>;
}

/** One protocol's way of parking a pool slot. */
export interface Parker {
  /** One park attempt of `slot`, from credential to rendezvous (or to why there is none). */
  park(slot: number): Promise<ParkOutcome>;
}
