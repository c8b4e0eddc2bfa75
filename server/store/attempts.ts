/**
 * Guess counters: wrong-code guesses per uuid and per source address in the current window, each
 * one item reserved and refunded by conditional writes, so concurrent guesses cannot exceed a
 * budget. The item exists for unknown uuids too (and expires with its window).
 */
import { type AttemptScope, attemptsKey } from './keys.js';
import { isConditionFailed, type Table } from './table.js';

export type { AttemptScope } from './keys.js';

/** A guess counter's current window. */
export interface AttemptWindow {
  count: number;
  /** Epoch seconds. */
  windowStart: number;
}

/** The outcome of reserving one guess. */
export type Reservation = { ok: true; windowStart: number } | { ok: false; retryAfter: number };

/** The guess counters of one table. */
export class Attempts {
  constructor(private readonly table: Table) {}

  /**
   * Reserves one guess in a counter's window, atomically: one conditional write that succeeds only
   * while the window holds fewer than `limit` (or has lapsed, starting a new one). However many
   * guesses arrive at once, at most `limit` reservations succeed per window, so at most that many
   * codes are evaluated. The item exists for unknown uuids too (and expires with its window).
   */
  async reserve(
    scope: AttemptScope,
    key: string,
    limit: number,
    nowSec: number,
    windowSec: number,
  ): Promise<Reservation> {
    const Key = attemptsKey(scope, key);
    const cutoff = nowSec - windowSec;
    const names = { '#n': 'guesses' };
    const inWindow = async (): Promise<Reservation | undefined> => {
      try {
        const out = await this.table.update({
          Key,
          UpdateExpression: 'SET #n = #n + :one',
          ConditionExpression: 'windowStart > :cutoff AND #n < :limit',
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: { ':one': 1, ':cutoff': cutoff, ':limit': limit },
          ReturnValues: 'ALL_NEW',
        });
        return { ok: true, windowStart: Number(out?.windowStart) };
      } catch (err) {
        if (isConditionFailed(err)) return undefined;
        throw err;
      }
    };
    const first = await inWindow();
    if (first) return first;
    if (limit > 0) {
      try {
        // No window, or a lapsed one: this guess opens a new window.
        await this.table.update({
          Key,
          UpdateExpression: 'SET #n = :one, windowStart = :now, expiresAt = :exp',
          ConditionExpression: 'attribute_not_exists(windowStart) OR windowStart <= :cutoff',
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: {
            ':one': 1,
            ':now': nowSec,
            ':cutoff': cutoff,
            ':exp': nowSec + windowSec,
          },
        });
        return { ok: true, windowStart: nowSec };
      } catch (err) {
        if (!isConditionFailed(err)) throw err;
      }
      // Someone else opened the window meanwhile: try once more inside it.
      const second = await inWindow();
      if (second) return second;
    }
    const current = await this.get(scope, key);
    const ends = (current?.windowStart ?? nowSec) + windowSec;
    return { ok: false, retryAfter: Math.max(1, ends - nowSec) };
  }

  /** Gives back a reservation (the code was valid: not a guess), if its window is still the current one. */
  async refund(scope: AttemptScope, key: string, windowStart: number): Promise<void> {
    try {
      await this.table.update({
        Key: attemptsKey(scope, key),
        UpdateExpression: 'SET #n = #n - :one',
        ConditionExpression: 'windowStart = :ws AND #n > :zero',
        ExpressionAttributeNames: { '#n': 'guesses' },
        ExpressionAttributeValues: { ':one': 1, ':ws': windowStart, ':zero': 0 },
      });
    } catch (err) {
      if (!isConditionFailed(err)) throw err;
    }
  }

  /** A guess counter's window, or undefined (never guessed at, or expired from the table). */
  async get(scope: AttemptScope, key: string): Promise<AttemptWindow | undefined> {
    const { pk, sk } = attemptsKey(scope, key);
    const item = await this.table.get<{ guesses: number; windowStart: number }>(pk, sk);
    return item ? { count: item.guesses, windowStart: item.windowStart } : undefined;
  }

  /**
   * Ends a uuid's lockout (operator console): deletes its guess counter, so its next codes are
   * evaluated again. Per-source counters are left alone (they belong to addresses, not to it).
   */
  async unlock(uuid: string): Promise<void> {
    await this.table.delete({ Key: attemptsKey('uuid', uuid) });
  }
}
