/**
 * Revocations reaching what is parked on this relay: a generic park whose cookie no longer
 * resolves (rotated, disabled, replaced, deleted) is told `-ERR`; an HTTP park whose identity is
 * gone, disabled, or rotated since its CONNECT (older generation) is closed. Live rendezvous whose
 * hidden server was parked here end the same way when their identity is gone, disabled or rotated
 * since the park (a cookie merely replaced by a newer registration leaves them running), recorded
 * as `revoked` with the reason.
 *
 * At rest this costs the store one query per round, however many keys are parked: every change
 * that can revoke a park writes a change notice first (`Store.noteChange`, server/store/changes.ts),
 * each round reads the notices of the last seconds, and re-checks only the keys of the uuids they
 * name — in every round while the notice is younger than NOTICE_WINDOW_MS (by this relay's clock),
 * so a notice that lands before its change, or beside it, is honoured when the change lands.
 * There is no sweep over every parked key. A cookie's own expiry needs no store read either: the
 * relay learned it when the park authenticated (the cookie check's answer), and a shared wheel of
 * expiry buckets refuses the key's parks at the first round after it passes.
 * Rounds are jittered so a fleet of relays does not query the store in step.
 */
import { isRendezvousError, QUOTA_EXCEEDED_MESSAGE } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { ParkKind } from '../core/protocol.js';
import { isLive } from '../server/cookies.js';
import type { Store } from '../server/store/index.js';
import type { CookieCache } from './cookie-cache.js';
import type { IdentityLimitsCache } from './identity-limits.js';
import type { Parked, ParkingLot } from './parking.js';
import type { Splices } from './splices.js';
import type { RefusalReason } from './telemetry.js';

/** Default period between rounds (a revocation takes effect within about this long). */
export const REVALIDATE_MS = 10_000;
/** Rounds start after period × (1 ± this), at random. */
export const REVALIDATE_JITTER = 0.2;
/** Store reads in flight at once during a round. */
export const REVALIDATE_CONCURRENCY = 8;
/**
 * Each round re-reads the notices of this long before the previous round's start: a notice's
 * stamp is its writer's clock when it began, and the write may land a few seconds later.
 */
export const CHANGES_OVERLAP_MS = 30_000;
/**
 * A noticed uuid is re-checked in every round for this long after this relay first read the
 * notice: its change is written after the notice (or at the same time), within this window.
 */
export const NOTICE_WINDOW_MS = 30_000;
/** Rounds in which a noticed uuid's limits are read again (cached uuids only). */
export const LIMITS_NOTICE_ROUNDS = 2;
/** What an expired parked cookie is told (the store's own words for it). */
export const COOKIE_EXPIRED_MESSAGE = 'cookie expired, register again';

/** What the re-check needs from the relay. */
export interface RevalidationDeps {
  store: Pick<Store, 'resolveCookie' | 'getIdentity' | 'changesSince'>;
  lot: ParkingLot;
  cookies: Pick<CookieCache, 'forget' | 'peek'>;
  log: Log;
  /** Ends a generic park with `-ERR <reason>`, recorded as refused for `why` (default `revoked`). */
  refuseGeneric: (p: Parked, reason: string, why?: RefusalReason) => void;
  /** Live rendezvous whose hidden server was parked here, by uuid (relay/splices.ts). */
  live?: Pick<Splices, 'uuids' | 'has' | 'revoke'>;
  /**
   * Per-identity limits: every noticed uuid is passed on (re-read only when cached here), and the
   * quota of capped identities with rendezvous here is checked each round.
   */
  limits?: Pick<IdentityLimitsCache, 'onNotice' | 'peek' | 'fresh' | 'get' | 'overQuota' | 'prime'>;
  periodMs?: number;
  /** How long a noticed uuid is re-checked each round (default NOTICE_WINDOW_MS; tests shorten it). */
  noticeWindowMs?: number;
}

/** A running re-check loop. */
export interface Revalidation {
  /** Runs one round now (tests, and the loop itself). */
  round(): Promise<void>;
  /** Hook for the parking lot: a key's count changed (a first park learns its cookie's expiry). */
  onCount(kind: ParkKind, key: string, count: number): void;
  stop(): void;
}

async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * Parked cookies by when they expire, in buckets of `bucketMs`: each round takes the buckets that
 * have passed since the last one (a few map reads, however many keys are parked).
 */
export class ExpiryWheel {
  private readonly at = new Map<string, { expiresAt: number; bucket: number }>();
  private readonly buckets = new Map<number, Set<string>>();
  private next: number;

  constructor(
    private readonly bucketMs: number,
    nowMs: number = Date.now(),
  ) {
    this.next = Math.floor(nowMs / bucketMs);
  }

  /** Whether `key` is on the wheel. */
  has(key: string): boolean {
    return this.at.has(key);
  }

  /** Puts `key` on the wheel to expire at `expiresAt` (epoch seconds). */
  add(key: string, expiresAt: number): void {
    this.remove(key);
    // Never behind the wheel's hand: an expiry already past is taken at the next round.
    const bucket = Math.max(this.next, Math.floor((expiresAt * 1000) / this.bucketMs));
    this.at.set(key, { expiresAt, bucket });
    const set = this.buckets.get(bucket);
    if (set) set.add(key);
    else this.buckets.set(bucket, new Set([key]));
  }

  /** Takes `key` off the wheel. */
  remove(key: string): void {
    const entry = this.at.get(key);
    if (entry === undefined) return;
    this.at.delete(key);
    const { bucket } = entry;
    const set = this.buckets.get(bucket);
    set?.delete(key);
    if (set?.size === 0) this.buckets.delete(bucket);
  }

  /** Takes off the wheel and returns every key expired at `nowMs`. */
  due(nowMs: number = Date.now()): string[] {
    const out: string[] = [];
    const last = Math.floor(nowMs / this.bucketMs);
    for (let b = this.next; b <= last; b++) {
      for (const key of this.buckets.get(b) ?? []) {
        if (!isLive(this.at.get(key)?.expiresAt ?? 0, nowMs)) out.push(key);
      }
    }
    for (const key of out) this.remove(key);
    // The current bucket may still hold keys that expire later in it: look at it again next time.
    this.next = last;
    return out;
  }
}

/** Starts re-checking the lot's parks every `periodMs` (jittered). */
export function startRevalidation(deps: RevalidationDeps): Revalidation {
  const periodMs = deps.periodMs ?? REVALIDATE_MS;
  const noticeWindowMs = deps.noticeWindowMs ?? NOTICE_WINDOW_MS;
  const { store, lot } = deps;
  const expiry = new ExpiryWheel(Math.max(1, Math.min(periodMs, 10_000)));
  /** Parked cookies whose expiry the cookie check's cache no longer had: checked next round. */
  const unknownExpiry = new Set<string>();

  const refuseAll = (cookie: string, reason: string) => {
    deps.cookies.forget(cookie);
    expiry.remove(cookie);
    for (const p of lot.takeAll('generic', cookie)) deps.refuseGeneric(p, reason);
  };

  const checkCookie = async (cookie: string) => {
    try {
      // The store itself, not the cookie cache: a revocation must be seen now.
      const binding = await store.resolveCookie(cookie);
      if (lot.count('generic', cookie) > 0) expiry.add(cookie, binding.expiresAt);
    } catch (err) {
      // A dead store is not a reason to drop parked servers; only a definite "no" is. A cookie
      // whose expiry is still unknown is asked about again next round.
      if (!isRendezvousError(err) || !err.code.startsWith('COOKIE_')) {
        if (lot.count('generic', cookie) > 0 && !expiry.has(cookie)) unknownExpiry.add(cookie);
        return;
      }
      refuseAll(cookie, err.message);
    }
  };

  const checkIdentity = async (uuid: string) => {
    let identity: Awaited<ReturnType<typeof store.getIdentity>>;
    try {
      identity = await store.getIdentity(uuid);
    } catch {
      return;
    }
    // The same read serves the limits (a uuid re-checked here is not read again for them).
    deps.limits?.prime(uuid, identity?.limits, true);
    const generation = identity?.generation ?? 0;
    const gone = !identity || identity.disabled;
    const stale = gone
      ? lot.takeAll('http', uuid)
      : lot.takeWhere('http', uuid, (p) => (p.generation ?? 0) !== generation);
    for (const p of stale) p.socket.destroy();
    if (!deps.live?.has(uuid)) return;
    const reason = !identity
      ? 'identity deleted'
      : identity.disabled
        ? 'identity disabled'
        : 'identity rotated';
    const ended = deps.live.revoke(uuid, (g) => gone || g !== generation, reason);
    if (ended > 0) deps.log.info('live rendezvous revoked', { uuid, ended, reason });
  };

  // A capped identity whose month ran out (its own traffic, or a quota lowered under it): its live
  // rendezvous end (recorded `revoked`, reason `quota exceeded`) and its parks are told so (an
  // HTTP park is closed: its next CONNECT is answered 429), so its agent stops parking uselessly.
  const checkQuota = async (uuid: string) => {
    if (!(await deps.limits?.overQuota(uuid))) return;
    const ended = deps.live?.revoke(uuid, () => true, QUOTA_EXCEEDED_MESSAGE) ?? 0;
    let parks = 0;
    for (const key of lot.keysOfUuid('generic', uuid))
      for (const p of lot.takeAll('generic', key)) {
        deps.refuseGeneric(p, QUOTA_EXCEEDED_MESSAGE, 'quota_exceeded');
        parks++;
      }
    for (const p of lot.takeAll('http', uuid)) {
      p.socket.destroy();
      parks++;
    }
    if (ended + parks > 0)
      deps.log.info('quota exceeded: rendezvous and parks ended', { uuid, ended, parks });
  };

  // Change notices: the cursor advances only after a successful read; notices already read
  // (again, inside the overlap) are skipped; each noticed uuid stays young for NOTICE_WINDOW_MS.
  let cursor = Date.now() - CHANGES_OVERLAP_MS;
  const seen = new Map<string, number>();
  const young = new Map<string, number>();
  /** Rounds that passed a young uuid to the limits cache (LIMITS_NOTICE_ROUNDS at most per notice). */
  const limitRounds = new Map<string, number>();
  const readNotices = async (): Promise<void> => {
    const startedAt = Date.now();
    const notices = await store.changesSince(cursor - CHANGES_OVERLAP_MS);
    const now = Date.now();
    for (const n of notices) {
      if (seen.has(n.id)) continue;
      seen.set(n.id, n.at);
      // A later notice for a uuid already young starts its window again (another change).
      young.set(n.uuid, now);
      limitRounds.delete(n.uuid);
    }
    cursor = startedAt;
    for (const [id, at] of seen) if (at < cursor - 2 * CHANGES_OVERLAP_MS) seen.delete(id);
  };

  let running: Promise<void> | undefined;
  const round = (): Promise<void> => {
    running ??= (async () => {
      try {
        try {
          await readNotices();
        } catch {
          // A dead store is not a reason to drop parked servers; the next round reads again, and
          // the uuids already young are re-checked below all the same.
        }
        const now = Date.now();
        // Expired cookies go without a store read: their expiry is known since they parked.
        for (const cookie of expiry.due(now)) refuseAll(cookie, COOKIE_EXPIRED_MESSAGE);
        const generic = new Set(unknownExpiry);
        unknownExpiry.clear();
        const http = new Set<string>();
        // Live here with a quota (usage grows without any notice), or noticed with something here.
        const quota = new Set<string>();
        // A live uuid whose limits left the cache (evicted, or past their age) is read again: a
        // long rendezvous must not outlive its quota, or miss a cap set while a notice was missed.
        const limits = deps.limits;
        if (limits)
          await eachLimited(deps.live?.uuids() ?? [], REVALIDATE_CONCURRENCY, async (uuid) => {
            const l = limits.fresh(uuid) ? limits.peek(uuid) : await limits.get(uuid);
            if (l?.monthlyBytes !== undefined) quota.add(uuid);
          });
        for (const [uuid, since] of young) {
          if (now - since > noticeWindowMs) {
            young.delete(uuid);
            limitRounds.delete(uuid);
            continue;
          }
          // Limits in the first two rounds of a notice: the change lands right after its notice
          // (store.setLimits), so the second read sees it even when the first came too early, and
          // a notice about something else (a registration) costs a cached uuid two reads, not one
          // a round. A uuid re-checked below (checkIdentity) takes them from that read instead.
          if (lot.count('http', uuid) > 0 || deps.live?.has(uuid)) http.add(uuid);
          const told = limitRounds.get(uuid) ?? 0;
          if (told < LIMITS_NOTICE_ROUNDS && !http.has(uuid)) {
            limitRounds.set(uuid, told + 1);
            deps.limits?.onNotice(uuid);
          }
          for (const key of lot.keysOfUuid('generic', uuid)) generic.add(key);
          if (lot.keysOfUuid('generic', uuid).length > 0 || http.has(uuid)) quota.add(uuid);
        }
        await eachLimited([...generic], REVALIDATE_CONCURRENCY, checkCookie);
        await eachLimited([...http], REVALIDATE_CONCURRENCY, checkIdentity);
        if (deps.limits) await eachLimited([...quota], REVALIDATE_CONCURRENCY, checkQuota);
      } catch (err) {
        deps.log.warn('revalidation round failed', { reason: (err as Error).message });
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  const onCount = (kind: ParkKind, key: string, count: number) => {
    if (kind !== 'generic') return;
    if (count === 0) {
      expiry.remove(key);
      unknownExpiry.delete(key);
      return;
    }
    if (expiry.has(key)) return;
    // The park was authenticated a moment ago by the cookie check, whose answer is still cached.
    const binding = deps.cookies.peek(key);
    if (binding) expiry.add(key, binding.expiresAt);
    else unknownExpiry.add(key);
  };

  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const schedule = () => {
    if (stopped) return;
    const delay = periodMs * (1 - REVALIDATE_JITTER + 2 * REVALIDATE_JITTER * Math.random());
    timer = setTimeout(() => void round().finally(schedule), delay);
    timer.unref();
  };
  schedule();

  return {
    round,
    onCount,
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
