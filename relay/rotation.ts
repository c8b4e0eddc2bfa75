/**
 * Spreads a periodic per-key job (re-checking a parked key, refreshing its park record) evenly over
 * a longer period: each tick takes the next share of the keys, so the store sees a steady trickle
 * instead of a burst of every key at once, and the share follows the number of keys.
 */

/** Hands out each key once per `periodMs` when `take` is called every `tickMs`. */
export class Rotation {
  private queue: string[] = [];
  private credit = 0;
  private roundSize = 0;

  constructor(
    private readonly periodMs: number,
    private readonly tickMs: number,
  ) {}

  /** The keys due this tick, out of the current `keys()` (read again when a round is done). */
  take(keys: () => string[]): string[] {
    if (this.queue.length === 0) {
      this.queue = keys();
      this.roundSize = this.queue.length;
    }
    if (this.roundSize === 0) return [];
    // Fractional shares carry over, so a few keys over a long period still get their turn.
    this.credit += (this.roundSize * this.tickMs) / this.periodMs;
    const n = Math.min(this.queue.length, Math.floor(this.credit));
    this.credit -= n;
    return this.queue.splice(0, n);
  }
}
