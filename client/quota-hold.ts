/**
 * The agent's one wait after a quota refusal (issue 30). A spent monthly quota does not come back
 * in seconds, so the agent does not retry it on its back-off: every slot of the pool waits for one
 * shared timer (said once), then one slot alone tries again — the prober — and the others follow
 * only once it parked (or failed for another reason). Renewed, and said again, when the prober
 * is refused again.
 */
import { secondsToNextMonth } from '../core/errors.js';

/**
 * The longest wait after a quota refusal before parking again (the `quotaRecheckMs` option's
 * default): a quota the operator raises is noticed within this time; a month's end sooner.
 */
export const QUOTA_RECHECK_MS = 15 * 60_000;

/** Spread added to each wait (a fraction of it), so agents told at the same time do not return in one burst. */
const QUOTA_JITTER = 0.05;

/**
 * The wait after a quota refusal: to the next UTC month (`retryAfterSeconds` when the relay said,
 * else computed), at most `recheckMs`, plus up to 5 % of jitter.
 */
export function quotaWaitMs(
  retryAfterSeconds: number | undefined,
  recheckMs: number,
  nowMs = Date.now(),
): number {
  const toMonth =
    (retryAfterSeconds && retryAfterSeconds > 0 ? retryAfterSeconds : secondsToNextMonth(nowMs)) * 1000;
  const base = Math.min(toMonth, recheckMs);
  return Math.round(base * (1 + Math.random() * QUOTA_JITTER));
}

/** The pool's shared quota wait (see the file's comment). */
export class QuotaHold {
  /** When the wait ends (0: no wait). */
  private until = 0;
  /** The slot trying again after the wait; the others wait for its outcome. */
  private prober: number | undefined;
  private waiters: Array<() => void> = [];

  constructor(
    private readonly sleep: (ms: number) => Promise<void>,
    private readonly stopped: () => boolean,
  ) {}

  /**
   * `slot` was refused for quota: a wait of `waitMs` starts. False when one was on already and
   * `slot` is not its prober (it dialled before the verdict): nothing to say or start again.
   */
  refused(slot: number, waitMs: number): boolean {
    if (this.until !== 0 && this.prober !== slot) return false;
    this.until = Date.now() + waitMs;
    this.prober = undefined;
    this.wake();
    return true;
  }

  /** `slot` parked, or failed for another reason: if it was the prober, the wait is over for all. */
  passed(slot: number): void {
    if (this.until === 0 || this.prober !== slot) return;
    this.until = 0;
    this.prober = undefined;
    this.wake();
  }

  /**
   * Resolves when `slot` may dial: at once without a wait; after one, as the prober or once the
   * prober passed. True when it waited (what the slot knew before may be stale).
   */
  async admit(slot: number): Promise<boolean> {
    let waited = false;
    while (this.until !== 0 && !this.stopped()) {
      const left = this.until - Date.now();
      if (left <= 0 && (this.prober === undefined || this.prober === slot)) {
        this.prober = slot;
        return waited;
      }
      waited = true;
      if (left > 0) await this.sleep(left);
      else await new Promise<void>((r) => this.waiters.push(r));
    }
    return waited;
  }

  /** The agent stopped: every slot waiting on the prober returns. */
  stop(): void {
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}
