/**
 * What the hidden-server agent reports about itself: the typed events a `HiddenServer` emits as
 * `'report'` (and logs in the schema of core/log.ts), the health snapshot `status()` returns, and its
 * one-line form (`expose`'s health line). (The TCP probe of the target is client/expose.ts's.)
 */
import type { LogFields } from '../core/log.js';
import type { TargetState } from '../core/relay-line.js';

/** How often `exposeHiddenServer` probes its target while idle (default; 0 turns probing off). */
export const PROBE_EVERY_MS = 30_000;

/**
 * How one rendezvous ended, seen from the agent: `closed` (both sides ended normally),
 * `mobile_reset` (the relay side aborted: the mobile client or the relay reset),
 * `target_reset` (the local target aborted), `target_unreachable` (the local target refused or
 * did not answer: the mobile side got a reset or a 502).
 */
export type AgentRendezvousEnd = 'closed' | 'mobile_reset' | 'target_reset' | 'target_unreachable';

/** Why a pool slot parked: its first park, or what ended the previous one. */
export type ParkCause = 'start' | 'rendezvous' | 'refusal' | 'failure' | 'target_changed' | 'moved';

/** The events of `HiddenServer#on('report')`, one per thing a person watching the agent wants to know. */
export type AgentEvent =
  | {
      event: 'park';
      /** `host:port` of the relay (generic), or the relay URL's host (HTTP-specific). */
      relay: string;
      protocol: 'generic' | 'http';
      slot: number;
      /** `start` for a slot's first park; otherwise what ended the one before. */
      after: ParkCause;
      /** The refusal or failure that preceded this park, in words. */
      reason?: string;
      /** What this park told the relay about the target (absent: not known yet, or not told). */
      target?: TargetState;
    }
  | {
      event: 'rendezvous';
      /** The relay's correlation id (absent where the relay offers none, e.g. the original's). */
      rid?: string;
      protocol: 'generic' | 'http';
      relay: string;
      /** Bytes mobile → hidden (to the target) and hidden → mobile, on the relay connection. */
      bytesToHidden: number;
      bytesToMobile: number;
      durationMs: number;
      end: AgentRendezvousEnd;
      /** What ended it, when it was not a clean close (the error's message). */
      reason?: string;
    }
  | { event: 'target'; state: TargetState; target?: string; reason?: string }
  | { event: 'error'; reason: string; fatal: boolean };

/** The agent's health, as `HiddenServer#status()` returns it and the health line prints it. */
export interface AgentStatus {
  uuid: string;
  protocol: 'generic' | 'http';
  /** When `listen()` was called (UTC ISO), and milliseconds since. */
  startedAt: string;
  uptimeMs: number;
  /** Sockets parked now, per relay (`host:port` → count). */
  parked: Record<string, number>;
  /** Rendezvous handed over so far (live ones included), live now, and ended other than `closed`. */
  served: number;
  live: number;
  failed: number;
  /** Bytes of ended rendezvous, mobile → hidden and hidden → mobile. */
  bytesToHidden: number;
  bytesToMobile: number;
  /** The last rendezvous that ended: when (UTC ISO), how, and its correlation id. */
  lastRendezvous?: { at: string; end: AgentRendezvousEnd; rid?: string };
  /** The target as last seen (a connect or a probe); `unknown` before either, or without a target. */
  target: TargetState | 'unknown';
  /** The last error (a failed registration or park, a refusal), when (UTC ISO) and what. */
  lastError?: { at: string; reason: string };
}

/** A duration for people: `42s`, `5m03s`, `2h05m`, `3d04h`. */
export function formatUptime(ms: number): string {
  const s = Math.floor(ms / 1000);
  const pad = (n: number) => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${pad(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86_400)}d${pad(Math.floor(s / 3600) % 24)}h`;
}

/**
 * The health line's fields (`event: 'health'`), flat so text and JSON logs carry the same thing:
 * `uptime=5m03s parked=127.0.0.1:8899=2 served=3 live=0 failed=1 bytesToHidden=… bytesToMobile=…
 * last=2026-12-01T04:21:05.123Z lastEnd=closed target=up lastError=none`.
 */
export function healthFields(s: AgentStatus): LogFields {
  const parked = Object.entries(s.parked)
    .map(([relay, n]) => `${relay}=${n}`)
    .join(',');
  return {
    event: 'health',
    uuid: s.uuid,
    protocol: s.protocol,
    uptime: formatUptime(s.uptimeMs),
    parked: parked || 'none',
    served: s.served,
    live: s.live,
    failed: s.failed,
    bytesToHidden: s.bytesToHidden,
    bytesToMobile: s.bytesToMobile,
    last: s.lastRendezvous?.at ?? 'never',
    lastEnd: s.lastRendezvous?.end,
    lastRid: s.lastRendezvous?.rid,
    target: s.target,
    lastError: s.lastError ? `${s.lastError.at} ${s.lastError.reason}` : 'none',
  };
}
