/**
 * The drain (SIGTERM): stop accepting, tell parked hidden servers `-ERR relay shutting down` (so
 * they re-park elsewhere), remove this relay's park records, let live splices run up to the
 * grace, then end what is left.
 */
import type { Log } from '../core/log.js';
import type { ParkRecords } from './park-records.js';
import type { ParkingLot } from './parking.js';
import { refuse } from './refuse.js';
import type { RelayTelemetry } from './telemetry.js';

/** What a drain stops, tells, waits for and ends. */
export interface DrainPlan {
  log: Log;
  lot: ParkingLot;
  records: ParkRecords;
  telemetry: RelayTelemetry;
  /** Stops background work at once: the revalidation, the keepalive sweep, the peer pool. */
  stopBackground(): void;
  /** Stops every listener; resolves once they are closed. */
  closeListeners(): Promise<void>;
  /** Live splices (the drain waits for them to end, up to its grace). */
  splices(): number;
  /** Ends every connection still open, once the grace is over. */
  cutConnections(): void;
  /** Runs last: after the splices, so the rendezvous they ended (and their usage) are written too. */
  flush(): Promise<void>;
}

/** Drains a relay, giving live splices up to `graceMs`. */
export async function drainRelay(plan: DrainPlan, graceMs: number): Promise<void> {
  const { log, lot, records, telemetry } = plan;
  plan.stopBackground();
  log.info('draining', { parked: lot.size, splices: plan.splices(), graceMs });
  const listenersClosed = plan.closeListeners();
  const cut = { generic: 0, http: 0 };
  for (const p of lot.drainAll()) {
    cut[p.kind]++;
    if (p.kind === 'generic') refuse(p.socket, 'relay shutting down');
    else p.socket.destroy();
  }
  // One record per protocol for the lot (`parked`: how many), not one per parked socket.
  for (const protocol of ['generic', 'http'] as const)
    if (cut[protocol] > 0) telemetry.refused('draining', { protocol, parked: cut[protocol] }, cut[protocol]);
  await records.removeAll();
  records.stop();
  // Let the -ERR lines reach the parked hidden servers before anything is cut.
  await new Promise((r) => setTimeout(r, 100));
  const until = Date.now() + graceMs;
  while (plan.splices() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  plan.cutConnections();
  // The cut splices end on their sockets' close events: their records and usage come before the flush.
  const cutUntil = Date.now() + 2_000;
  while (plan.splices() > 0 && Date.now() < cutUntil) await new Promise((r) => setTimeout(r, 10));
  await listenersClosed;
  await plan.flush();
  log.info('drained', { cut: plan.splices() });
}
