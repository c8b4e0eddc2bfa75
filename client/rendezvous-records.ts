/**
 * The hidden server's rendezvous in progress and done: each socket handed to the application is
 * tracked until it closes, then counted, logged (bounded) and reported as one `rendezvous` record
 * with its bytes, duration and how it ended.
 */
import type { Socket } from 'node:net';
import { type Log, LogBudget } from '../core/log.js';
import type { AgentEvent, AgentRendezvousEnd, AgentStatus } from './agent-report.js';

/**
 * Rendezvous records logged per minute at most: anyone who can look the uuid up can start
 * rendezvous, and each one would otherwise be a line on the hidden server's disk. The health line,
 * status() and the 'report' events still count every one; the next record logged says how many
 * were left out (`suppressed`).
 */
const RENDEZVOUS_LOGS_PER_MINUTE = 120;

/** A rendezvous in progress: what its end record needs. */
interface Session {
  startedAt: number;
  rid?: string;
  relay: string;
  /** The socket's byte counters when it was handed over (the park's own bytes are not the rendezvous's). */
  readBase: number;
  writeBase: number;
  end?: AgentRendezvousEnd;
  /** What ended it, when it was not a clean close. */
  reason?: string;
}

/** Who the records are about and where they go. */
export interface RecordsOwner {
  uuid: string;
  protocol: 'generic' | 'http';
  log: Log;
  report: (e: AgentEvent) => void;
}

/** The live rendezvous of one agent, and the counters of those that ended (for `status()`). */
export class RendezvousRecords {
  private readonly live = new Map<Socket, Session>();
  private readonly logBudget = new LogBudget(RENDEZVOUS_LOGS_PER_MINUTE);
  private served = 0;
  private failed = 0;
  private bytesToHidden = 0;
  private bytesToMobile = 0;
  private lastRendezvous: AgentStatus['lastRendezvous'];

  constructor(private readonly owner: RecordsOwner) {}

  /** Rendezvous still open. */
  get size(): number {
    return this.live.size;
  }

  /** The counters `status()` reports. */
  counters(): Pick<AgentStatus, 'served' | 'live' | 'failed' | 'bytesToHidden' | 'bytesToMobile'> {
    return {
      served: this.served,
      live: this.live.size,
      failed: this.failed,
      bytesToHidden: this.bytesToHidden,
      bytesToMobile: this.bytesToMobile,
    };
  }

  /** The last rendezvous that ended (a copy), if any did. */
  last(): AgentStatus['lastRendezvous'] {
    return this.lastRendezvous && { ...this.lastRendezvous };
  }

  /**
   * A rendezvous starts on `socket`: tracked until it closes, then recorded; `closed` runs after
   * the record. A reset is recorded as `mobile_reset` unless something said otherwise first.
   */
  open(socket: Socket, relay: string, rid: string | undefined, closed: () => void): void {
    // The bytes the park itself read (the status line or CONNECT answer) are not the
    // rendezvous's; bytes already buffered (the early data, the request head) are.
    const session: Session = {
      startedAt: Date.now(),
      rid,
      relay,
      readBase: socket.bytesRead - socket.readableLength,
      writeBase: socket.bytesWritten,
    };
    this.live.set(socket, session);
    this.served++;
    // A mobile client that resets must not take the process down with an unhandled 'error':
    // this listener stays for the socket's life (the application may add its own; the error
    // also shows as 'close' with hadError).
    socket.on('error', (err) => {
      if (session.end) return;
      session.end = 'mobile_reset';
      session.reason = err.message;
    });
    socket.once('close', () => {
      this.live.delete(socket);
      this.ended(socket, session);
      closed();
    });
  }

  /** Overrides how a live rendezvous is recorded as ending, and why (the first call wins). */
  noteEnd(socket: Socket, end: AgentRendezvousEnd, reason?: string): void {
    const session = this.live.get(socket);
    if (session && !session.end) {
      session.end = end;
      session.reason = reason;
    }
  }

  /** One rendezvous ended: count it, log its record (event `rendezvous`), report it. */
  private ended(socket: Socket, session: Session): void {
    const end = session.end ?? 'closed';
    const bytesToHidden = Math.max(0, socket.bytesRead - session.readBase);
    const bytesToMobile = Math.max(0, socket.bytesWritten - session.writeBase);
    const durationMs = Date.now() - session.startedAt;
    this.bytesToHidden += bytesToHidden;
    this.bytesToMobile += bytesToMobile;
    if (end !== 'closed') this.failed++;
    this.lastRendezvous = { at: new Date().toISOString(), end, rid: session.rid };
    if (!session.rid) delete this.lastRendezvous.rid;
    const record = {
      rid: session.rid,
      protocol: this.owner.protocol,
      relay: session.relay,
      bytesToHidden,
      bytesToMobile,
      durationMs,
      end,
      reason: session.reason,
    };
    const budget = this.logBudget.take('rendezvous');
    const log = this.owner.log;
    if (budget.ok)
      (end === 'closed' || end === 'mobile_reset' ? log.info : log.warn)('rendezvous ended', {
        event: 'rendezvous',
        uuid: this.owner.uuid,
        ...record,
        suppressed: budget.suppressed || undefined,
      });
    const e: AgentEvent = { event: 'rendezvous', ...record };
    if (!session.rid) delete e.rid;
    if (!session.reason) delete e.reason;
    this.owner.report(e);
  }
}
