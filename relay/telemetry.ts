/**
 * The relay's telemetry: what it logs and counts about each rendezvous and each refusal.
 * (Foundation stub: the shared types; the relay-instrumentation change fills in the rest.)
 */

/** Which protocol a rendezvous or refusal belongs to. */
export type TelemetryProtocol = 'generic' | 'http';

/** How a rendezvous ended. */
export type RendezvousEnd =
  | 'closed'
  | 'hidden_reset'
  | 'mobile_reset'
  | 'idle_timeout'
  | 'drained'
  | 'peer_lost';

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
  /** The mobile client's source address, when this relay saw it. */
  source?: string;
}

/** What an agent said about its target when it parked (generic `target=` option, HTTP `Rendezvous-Target`). */
export type TargetState = 'up' | 'down';
