/**
 * The agent's waiting: jittered exponential back-off between failed attempts (or the relay's
 * `Retry-After`, capped), and sleeps that `stop()` cuts short.
 */

/** Back-off bounds: the first wait and the longest one, in ms. */
export interface BackoffBounds {
  minMs: number;
  maxMs: number;
}

/** Backoff defaults: 250 ms doubling to 30 s. */
export const BACKOFF_DEFAULTS = { minMs: 250, maxMs: 30_000 } as const;

/** The longest `Retry-After` the agent honours as given; longer ones are capped to this. */
export const MAX_RETRY_AFTER_MS = 300_000;

/** The wait before attempt `attempt` (0-based): doubling from `minMs` to `maxMs`, jittered to half–whole. */
export function backoffDelay(bounds: BackoffBounds, attempt: number): number {
  const base = Math.min(bounds.maxMs, bounds.minMs * 2 ** attempt);
  return Math.round(base / 2 + (Math.random() * base) / 2);
}

/** The attempts of one loop (a pool slot, a registration): each failure waits longer, a success starts afresh. */
export class Backoff {
  private attempt = 0;

  constructor(private readonly bounds: BackoffBounds) {}

  /** The next attempt starts from the shortest wait again. */
  reset(): void {
    this.attempt = 0;
  }

  /**
   * The wait after a failure (it counts as an attempt): `retryAfterSeconds` when the relay or API
   * gave one (capped), else the back-off.
   */
  next(retryAfterSeconds?: number): number {
    const attempt = this.attempt++;
    if (retryAfterSeconds && retryAfterSeconds > 0) {
      // Jittered a little so agents told the same Retry-After do not return in one burst.
      return Math.min(MAX_RETRY_AFTER_MS, retryAfterSeconds * 1000) + Math.round(Math.random() * 250);
    }
    return backoffDelay(this.bounds, attempt);
  }

  /** The shortest wait, without counting an attempt (a pause, not a failure). */
  first(): number {
    return backoffDelay(this.bounds, 0);
  }
}

/** Sleeps that all end at once on `stop()` (and return at once after it). */
export class Sleeper {
  private readonly wakers = new Set<() => void>();
  private stopped = false;

  /** Resolves after `ms`, or at once when stopped. */
  sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(t);
        this.wakers.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, ms);
      this.wakers.add(wake);
    });
  }

  /** Ends every sleep now and every later one at once. */
  stop(): void {
    this.stopped = true;
    for (const wake of this.wakers) wake();
  }
}
