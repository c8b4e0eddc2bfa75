/**
 * The relay's telemetry: what it logs and counts about each rendezvous and each refusal, in one
 * object per relay (`RelayTelemetry`) holding the metrics registry and the log.
 *
 *   - a rendezvous is logged once, at its end, by every relay it crossed (the relay the mobile
 *     client reached and, through a peer link, the relay holding the hidden server), all under the
 *     same correlation id `rid`;
 *   - a refusal (every `-ERR` line and HTTP error the relay answers, handshake timeouts included)
 *     is counted by reason, always, and logged through the rate-limited path of `LimitLog`;
 *   - gauges (parked sockets, live splices) are read from the relay's own state when scraped.
 *
 * Never a secret, TOTP code or cookie: records carry the uuid, the source address and the reason.
 */

import { isRendezvousError } from '../core/errors.js';
import { HttpError } from '../core/http-head.js';
import type { Log, LogFields, RefusalLogGate } from '../core/log.js';
import type { ParkKind } from '../core/protocol.js';
import type { SpliceEnd } from '../core/splice.js';
import { pooledTokens } from '../server/cookies.js';
import { METRIC } from '../server/metrics/catalogue.js';
import { Metrics } from '../server/metrics/registry.js';
import { LimitLog, SPLICE_CAP_MESSAGE } from './limits.js';

/** Which protocol a rendezvous or refusal belongs to (the park kinds of core/protocol.ts). */
export type TelemetryProtocol = ParkKind;

/** How a rendezvous ended. */
export type RendezvousEnd =
  | 'closed'
  | 'hidden_reset'
  | 'mobile_reset'
  | 'idle_timeout'
  | 'drained'
  | 'peer_lost'
  | 'revoked';

/** One rendezvous, logged once at its end (and handed to `RelayOptions.onRendezvousEnd`). */
export interface RendezvousSummary {
  /** Correlation id: the same in the pairing relay's, the peer relay's and the agent's logs. */
  rid: string;
  protocol: TelemetryProtocol;
  uuid: string;
  /** The relay that logs this record. */
  relayId: string;
  /** 0: both sides on this relay; 1: through a peer link. */
  hops: number;
  /** The relay holding the hidden server's socket (this one when hops is 0). */
  hiddenRelayId: string;
  /** The relay the mobile client reached (this one when hops is 0). */
  mobileRelayId: string;
  /** Bytes mobile → hidden and hidden → mobile. */
  bytesToHidden: number;
  bytesToMobile: number;
  startedAt: number;
  durationMs: number;
  end: RendezvousEnd;
  /** Why a `revoked` rendezvous was ended: `identity rotated`, `identity disabled`, `identity deleted`. */
  reason?: string;
  /** The mobile client's source address, when this relay saw it. */
  source?: string;
}

/** What an agent said about its target (the wire's `target=` option; defined with the line format). */
export type { TargetState } from '../core/relay-line.js';

/**
 * Why the relay said no: the `reason` of refusal records and the label of the Refusals metric.
 * Stable: dashboards and alarms select on these values. docs/operations.md's table explains each.
 */
export const REFUSAL_REASONS = [
  'malformed_line',
  'line_too_long',
  'handshake_timeout',
  'unknown_cookie',
  'expired_cookie',
  'revoked',
  'no_hidden_server',
  'not_found',
  'no_name',
  'not_host_routed',
  'bad_code',
  'identity_disabled',
  'code_length_refused',
  'missing_response',
  'bad_scheme',
  'early_data',
  'too_many_attempts',
  'too_many_handshakes',
  'too_many_waiting',
  'too_many_splices',
  'too_many_parked',
  'quota_exceeded',
  'at_capacity',
  'store_unavailable',
  'draining',
  'peer_refused',
  'internal',
] as const;

/** One refusal reason. */
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** Where a refusal happened: one of the public protocols, or the peer port. */
export type RefusalProtocol = TelemetryProtocol | 'peer';

/**
 * The reason of a refusal raised as an error (the one mapping of error codes to reasons). BUSY
 * errors differ by which bound refused them, told by their stable messages.
 */
export function refusalReason(err: unknown): RefusalReason {
  if (err instanceof HttpError) {
    switch (err.status) {
      case 403:
        return 'bad_scheme';
      case 407:
        return 'missing_response';
      case 409:
        return 'early_data';
      case 431:
        return 'line_too_long';
      default:
        return 'malformed_line';
    }
  }
  if (!isRendezvousError(err)) return 'internal';
  switch (err.code) {
    case 'MALFORMED_LINE':
    case 'BAD_REQUEST':
    case 'PROTOCOL':
      return 'malformed_line';
    case 'LINE_TOO_LONG':
      return 'line_too_long';
    case 'HANDSHAKE_TIMEOUT':
      return 'handshake_timeout';
    case 'COOKIE_UNKNOWN':
      return 'unknown_cookie';
    case 'COOKIE_EXPIRED':
      return 'expired_cookie';
    case 'COOKIE_REPLACED':
      return 'revoked';
    case 'AUTH_FAILED':
      return 'bad_code';
    case 'TOO_MANY_ATTEMPTS':
      return 'too_many_attempts';
    case 'IDENTITY_DISABLED':
      return 'identity_disabled';
    case 'CODE_LENGTH_REFUSED':
      return 'code_length_refused';
    case 'STORE_UNAVAILABLE':
      return 'store_unavailable';
    case 'TOO_MANY_PARKED':
      return 'too_many_parked';
    case 'QUOTA_EXCEEDED':
      return 'quota_exceeded';
    case 'BUSY':
      if (err.message.startsWith(SPLICE_CAP_MESSAGE)) return 'too_many_splices';
      if (/handshake/.test(err.message)) return 'too_many_handshakes';
      if (/waiting/.test(err.message)) return 'too_many_waiting';
      return 'at_capacity';
    default:
      return 'internal';
  }
}

/**
 * Refusals that are normal steps of a protocol, logged at INFO rather than WARN: the 401 that asks
 * a client to name a hidden server (curl --digest's first request always gets it), parked sockets
 * told to re-park because their registration was replaced.
 */
const ROUTINE: ReadonlySet<RefusalReason> = new Set(['no_name', 'revoked']);

// Correlation ids come from a block of CSPRNG bytes drawn 4 KiB at a time (one call per pairing
// would cost more than the rest of a local pairing's bookkeeping).
/** A fresh correlation id: base64url of 12 CSPRNG bytes (16 characters). */
export const newRid: () => string = pooledTokens(12, 340);

/** A rendezvous as its splice begins (everything the end record needs but the bytes and the end). */
export interface RendezvousStart {
  rid: string;
  protocol: TelemetryProtocol;
  uuid: string;
  hops: 0 | 1;
  hiddenRelayId: string;
  mobileRelayId: string;
  /** The mobile client's address, when it reached this relay. */
  source?: string;
  /**
   * Bytes carried towards the hidden server before the splice began: the mobile client's early
   * bytes after its cookie line, or the HTTP request head as forwarded and what followed it.
   */
  toHiddenBefore: number;
  startedAt: number;
}

/** Bytes direction label values of the Bytes metric. */
export type BytesDirection = 'to_hidden' | 'to_mobile';

/** A relay's metrics and log, and the one place its rendezvous and refusals are recorded. */
export class RelayTelemetry {
  readonly metrics: Metrics;
  /** The rate-limited log path every refusal and limit line goes through. */
  readonly limitLog: LimitLog;
  private readonly log: Log;
  private readonly refusals;
  private readonly pairings;
  private readonly bytes;
  private readonly handshakeTime;
  private readonly peerLatency;

  constructor(
    private readonly opts: {
      relayId: string;
      log: Log;
      metrics?: Metrics;
      /** The refusal log's budgets (default: LimitLog's). */
      gate?: RefusalLogGate;
      onRendezvousEnd?: (summary: RendezvousSummary) => void;
      /** True once the relay drains (a splice cut then ended `drained`). */
      draining: () => boolean;
    },
  ) {
    this.log = opts.log;
    this.metrics = opts.metrics ?? new Metrics();
    this.limitLog = new LimitLog(opts.log, opts.gate);
    const m = this.metrics;
    this.refusals = m.counter(METRIC.relayRefusals, 'Connections and requests the relay refused, by reason.');
    this.pairings = m.counter(
      METRIC.pairings,
      'Rendezvous paired by the relay the mobile client reached, by protocol and path (local or peer).',
    );
    this.bytes = m.counter(
      METRIC.rendezvousBytes,
      'Bytes carried by ended rendezvous, by direction (to_hidden, to_mobile).',
    );
    this.handshakeTime = m.histogram(
      METRIC.handshakeTime,
      'Time from accept to parked (hidden server) or paired (mobile client), by protocol.',
    );
    this.peerLatency = m.histogram(
      METRIC.peerLinkLatency,
      'Time for another relay to answer a peer request (+OK or -ERR).',
    );
  }

  /** The relay's live state, read when scraped: parked sockets by protocol and live splices. */
  watch(parked: (kind: ParkKind) => number, splices: () => number): void {
    this.metrics.gaugeFrom(METRIC.parkedSockets, 'Hidden-server sockets parked on this relay.', () => [
      { labels: { protocol: 'generic' }, value: parked('generic') },
      { labels: { protocol: 'http' }, value: parked('http') },
    ]);
    this.metrics.gaugeFrom(METRIC.liveSplices, 'Rendezvous being spliced on this relay.', () => [
      { labels: {}, value: splices() },
    ]);
  }

  /**
   * Counts a refusal (`count` of them: a drain refuses every parked socket at once) and logs it
   * unless its reason's log budget is spent. `source` is the peer's address.
   */
  refused(
    reason: RefusalReason,
    fields: { protocol: RefusalProtocol; source?: string; uuid?: string } & LogFields,
    count = 1,
  ): void {
    this.refusals.inc({ reason }, count);
    this.limitLog.write(`refusal ${reason}`, ROUTINE.has(reason) ? 'info' : 'warn', 'refused', {
      event: 'refusal',
      reason,
      ...fields,
      ...(count > 1 ? { count } : {}),
    });
  }

  /** A hidden server parked or a mobile client paired, `acceptedAt` being its accept time. */
  handshake(protocol: TelemetryProtocol, acceptedAt: number): void {
    this.handshakeTime.observe({ protocol }, Date.now() - acceptedAt);
  }

  /** A mobile client that reached this relay was paired, here (`local`) or through a peer. */
  paired(protocol: TelemetryProtocol, path: 'local' | 'peer'): void {
    this.pairings.inc({ protocol, path });
  }

  /** A peer request was answered after `ms`. */
  peerAnswered(ms: number): void {
    this.peerLatency.observe({}, ms);
  }

  /**
   * A rendezvous's splice ended: one record, the Bytes metric, and (on the relay holding the
   * hidden server's socket) `onRendezvousEnd`. The splice's `a` is the hidden side, `b` the mobile
   * side; a side that is a peer link (its relay is another one) ends as `peer_lost` when it breaks.
   * `revoked` says why a revocation ended it (the record's `reason`).
   */
  ended(r: RendezvousStart, end: SpliceEnd, revoked?: string): void {
    const bytesToHidden = r.toHiddenBefore + end.fromB;
    const bytesToMobile = end.fromA;
    this.bytes.inc({ direction: 'to_hidden' }, bytesToHidden);
    this.bytes.inc({ direction: 'to_mobile' }, bytesToMobile);
    const here = this.opts.relayId;
    const hiddenIsLink = r.hiddenRelayId !== here;
    const mobileIsLink = r.mobileRelayId !== here;
    let how: RendezvousEnd;
    if (revoked !== undefined) how = 'revoked';
    else if (end.cause === 'idle') how = 'idle_timeout';
    else if (end.cause === 'closed') how = 'closed';
    else if (this.opts.draining()) how = 'drained';
    else if (end.cause === 'a') how = hiddenIsLink ? 'peer_lost' : 'hidden_reset';
    else how = mobileIsLink ? 'peer_lost' : 'mobile_reset';
    const durationMs = Date.now() - r.startedAt;
    // The record: with hops 0 both relay ids are relayId, so they are written only for a hop.
    const fields: LogFields = {
      event: 'rendezvous',
      rid: r.rid,
      protocol: r.protocol,
      uuid: r.uuid,
      relayId: here,
      hops: r.hops,
    };
    if (r.hops !== 0) {
      fields.hiddenRelayId = r.hiddenRelayId;
      fields.mobileRelayId = r.mobileRelayId;
    }
    fields.bytesToHidden = bytesToHidden;
    fields.bytesToMobile = bytesToMobile;
    fields.durationMs = durationMs;
    fields.end = how;
    if (revoked !== undefined) fields.reason = revoked;
    if (r.source !== undefined) fields.source = r.source;
    this.log.info('rendezvous ended', fields);
    if (hiddenIsLink || !this.opts.onRendezvousEnd) return;
    const summary: RendezvousSummary = {
      rid: r.rid,
      protocol: r.protocol,
      uuid: r.uuid,
      relayId: here,
      hops: r.hops,
      hiddenRelayId: r.hiddenRelayId,
      mobileRelayId: r.mobileRelayId,
      bytesToHidden,
      bytesToMobile,
      startedAt: r.startedAt,
      durationMs,
      end: how,
    };
    if (revoked !== undefined) summary.reason = revoked;
    if (r.source !== undefined) summary.source = r.source;
    try {
      this.opts.onRendezvousEnd(summary);
    } catch (err) {
      this.log.error('rendezvous end listener failed', { rid: r.rid, error: String(err) });
    }
  }
}
