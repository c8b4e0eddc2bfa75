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

/**
 * The outcome of reserving one guess: `count` is the window's guesses with this one (so more than
 * one means others are evaluated, or were wrong, in the same window); `earlier`, the guesses left
 * standing in the window before it when that one ended less than a window before this one began
 * (a steady attacker spans windows).
 */
export type Reservation =
  | { ok: true; windowStart: number; count: number; earlier: number }
  | { ok: false; retryAfter: number };

/** The fields a reservation reads back from its counter's item. */
interface CounterItem {
  guesses?: number;
  windowStart?: number;
  prevGuesses?: number;
  prevWindowStart?: number;
}

/** A successful reservation from its counter's item as written. */
function reserved(item: CounterItem, windowSec: number): Reservation {
  const windowStart = Number(item.windowStart);
  const prevStart = Number(item.prevWindowStart ?? 0);
  return {
    ok: true,
    windowStart,
    count: Number(item.guesses),
    earlier: windowStart - prevStart < 2 * windowSec ? Number(item.prevGuesses ?? 0) : 0,
  };
}

/** Counters whose window a process remembers (a hint for the first write; cleared when full). */
const MAX_WINDOWS_REMEMBERED = 10_000;

/** The guess counters of one table. */
export class Attempts {
  /** The window start last reserved in, per counter: which write a reservation tries first. */
  private readonly windows = new Map<string, number>();

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
        return reserved((out ?? {}) as CounterItem, windowSec);
      } catch (err) {
        if (isConditionFailed(err)) return undefined;
        throw err;
      }
    };
    const open = async (): Promise<Reservation | undefined> => {
      try {
        // No window, or a lapsed one: this guess opens a new window. The lapsed window's standing
        // guesses are kept beside it, and the item outlives its window by one more, so a steady
        // attacker still counts as one when a new window opens.
        const out = await this.table.update({
          Key,
          UpdateExpression:
            'SET prevGuesses = if_not_exists(#n, :zero), prevWindowStart = if_not_exists(windowStart, :zero), #n = :one, windowStart = :now, expiresAt = :exp REMOVE failedFrom',
          ConditionExpression: 'attribute_not_exists(windowStart) OR windowStart <= :cutoff',
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: {
            ':zero': 0,
            ':one': 1,
            ':now': nowSec,
            ':cutoff': cutoff,
            ':exp': nowSec + 2 * windowSec,
          },
          ReturnValues: 'ALL_NEW',
        });
        return reserved((out ?? {}) as CounterItem, windowSec);
      } catch (err) {
        if (isConditionFailed(err)) return undefined;
        throw err;
      }
    };
    // Each try is one conditional write, so the order only decides how many round trips a
    // reservation takes, never how many succeed. Most counters a process has not seen in this
    // window have none (an agent's uuid, its address), so a window is opened first; one it saw
    // in the window is most likely still open. A try that finds the other case is followed by the
    // other write, then by the first again (someone opened or closed the window meanwhile).
    const id = `${Key.pk}/${Key.sk}`;
    const seen = this.windows.get(id);
    const tries =
      limit <= 0
        ? [inWindow]
        : seen !== undefined && seen > cutoff
          ? [inWindow, open, inWindow]
          : [open, inWindow, open];
    for (const t of tries) {
      const r = await t();
      if (r?.ok) {
        this.remember(id, r.windowStart);
        return r;
      }
    }
    const current = await this.get(scope, key);
    // A full window: the next guess here tries it first (an attacker's guesses cost fewer writes).
    if (current) this.remember(id, current.windowStart);
    const ends = (current?.windowStart ?? nowSec) + windowSec;
    return { ok: false, retryAfter: Math.max(1, ends - nowSec) };
  }

  private remember(id: string, windowStart: number): void {
    if (this.windows.size >= MAX_WINDOWS_REMEMBERED) this.windows.clear();
    this.windows.set(id, windowStart);
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

  /**
   * Remembers, on a uuid's counter, that a guess counted in its window (`uuidWindowStart`) came
   * from `source`, whose own counter's window began at `sourceWindowStart`: what `reset` gives
   * back. At most one entry per guess the uuid's budget admits, so the list stays bounded.
   */
  async noteFailure(
    uuid: string,
    uuidWindowStart: number,
    source: string,
    sourceWindowStart: number,
  ): Promise<void> {
    try {
      await this.table.update({
        Key: attemptsKey('uuid', uuid),
        UpdateExpression: 'SET failedFrom = list_append(if_not_exists(failedFrom, :empty), :entry)',
        ConditionExpression: 'windowStart = :ws',
        ExpressionAttributeValues: {
          ':empty': [],
          ':entry': [{ source, windowStart: sourceWindowStart }],
          ':ws': uuidWindowStart,
        },
      });
    } catch (err) {
      // The window lapsed meanwhile: its guesses no longer count anywhere worth giving back.
      if (!isConditionFailed(err)) throw err;
    }
  }

  /**
   * Clears a uuid's guesses (its settings changed, so they were judged by rules that no longer
   * hold): gives each source back the guesses it spent on this uuid in the source's current
   * window, then deletes the uuid's counter. Guesses a source spent on other uuids stay counted.
   */
  async reset(uuid: string): Promise<void> {
    const { pk, sk } = attemptsKey('uuid', uuid);
    const item = await this.table.get<{ failedFrom?: Array<{ source: string; windowStart: number }> }>(
      pk,
      sk,
    );
    const spent = new Map<string, { source: string; windowStart: number; n: number }>();
    for (const e of item?.failedFrom ?? []) {
      const k = `${e.source}@${e.windowStart}`;
      const s = spent.get(k) ?? { source: e.source, windowStart: Number(e.windowStart), n: 0 };
      s.n++;
      spent.set(k, s);
    }
    for (const { source, windowStart, n } of spent.values()) {
      await this.giveBack(source, windowStart, n);
    }
    await this.table.delete({ Key: attemptsKey('uuid', uuid) });
  }

  /** Takes `n` guesses off a source's counter, if its window is still `windowStart` (never below 0). */
  private async giveBack(source: string, windowStart: number, n: number): Promise<void> {
    const update = (expression: string, condition: string, values: Record<string, unknown>) =>
      this.table
        .update({
          Key: attemptsKey('source', source),
          UpdateExpression: expression,
          ConditionExpression: condition,
          ExpressionAttributeNames: { '#n': 'guesses' },
          ExpressionAttributeValues: { ':ws': windowStart, ...values },
        })
        .then(
          () => true,
          (err) => {
            if (isConditionFailed(err)) return false;
            throw err;
          },
        );
    if (await update('SET #n = #n - :k', 'windowStart = :ws AND #n >= :k', { ':k': n })) return;
    await update('SET #n = :zero', 'windowStart = :ws', { ':zero': 0 });
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
