/**
 * Periodic re-check of what is parked on this relay, so that a revocation in the store reaches
 * sockets that authenticated before it: a generic park whose cookie no longer resolves (rotated,
 * disabled, replaced, expired, or from before the R/I split) is told `-ERR`; an HTTP park whose
 * identity is gone, disabled, or rotated since its CONNECT (older generation) is closed. Live
 * rendezvous whose hidden server was parked here end the same way when their identity is gone,
 * disabled or rotated since the park (a cookie merely replaced by a newer registration leaves
 * them running), recorded as `revoked` with the reason.
 *
 * At rest this costs the store one query per round, not one read per parked key: every change
 * that can revoke a park leaves a change notice (`Store.noteChange`), each round reads the notices
 * of the last seconds and re-checks only the keys of the uuids they name. A slow sweep re-checks
 * every key once per SWEEP_MS besides: a notice lost to a writer's crash, clock skew beyond the
 * overlap, and a cookie that merely expired (no notice: nobody can look it up any more, so its
 * parks only wait, and go at the sweep).
 * Rounds are jittered so a fleet of relays does not query the store in step.
 */
import { isRendezvousError } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { Store } from '../server/store/index.js';
import type { CookieCache } from './cookie-cache.js';
import type { Parked, ParkingLot } from './parking.js';
import { Rotation } from './rotation.js';
import type { Splices } from './splices.js';

/** Default period between rounds (a revocation takes effect within about this long). */
export const REVALIDATE_MS = 10_000;
/** Rounds start after period × (1 ± this), at random. */
export const REVALIDATE_JITTER = 0.2;
/** Store reads in flight at once during a round. */
export const REVALIDATE_CONCURRENCY = 8;
/** Every parked key is re-read from the store once per this period, spread over the rounds. */
export const SWEEP_MS = 600_000;
/**
 * Each round re-reads the notices of this long before the previous round's start: a notice's
 * stamp is its writer's clock when it began, and the write may land a few seconds later.
 */
export const CHANGES_OVERLAP_MS = 30_000;

/** What the re-check needs from the relay. */
export interface RevalidationDeps {
  store: Pick<Store, 'resolveCookie' | 'getIdentity' | 'changesSince'>;
  lot: ParkingLot;
  cookies: Pick<CookieCache, 'forget'>;
  log: Log;
  /** Ends a generic park with `-ERR <reason>`. */
  refuseGeneric: (p: Parked, reason: string) => void;
  /** Live rendezvous whose hidden server was parked here, by uuid (relay/splices.ts). */
  live?: Pick<Splices, 'uuids' | 'has' | 'revoke'>;
  periodMs?: number;
  /** Period of the full sweep (default SWEEP_MS). */
  sweepMs?: number;
}

/** A running re-check loop. */
export interface Revalidation {
  /** Runs one round now (tests, and the loop itself). */
  round(): Promise<void>;
  stop(): void;
}

async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Starts re-checking the lot's parks every `periodMs` (jittered). */
export function startRevalidation(deps: RevalidationDeps): Revalidation {
  const periodMs = deps.periodMs ?? REVALIDATE_MS;
  const { store, lot } = deps;

  const checkCookie = async (cookie: string) => {
    try {
      // The store itself, not the cookie cache: a revocation must be seen now.
      await store.resolveCookie(cookie);
    } catch (err) {
      // A dead store is not a reason to drop parked servers; only a definite "no" is.
      if (!isRendezvousError(err) || !err.code.startsWith('COOKIE_')) return;
      deps.cookies.forget(cookie);
      for (const p of lot.takeAll('generic', cookie)) deps.refuseGeneric(p, err.message);
    }
  };

  const checkIdentity = async (uuid: string) => {
    let identity: Awaited<ReturnType<typeof store.getIdentity>>;
    try {
      identity = await store.getIdentity(uuid);
    } catch {
      return;
    }
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

  // Change notices: the cursor advances only after a successful read, and notices already acted
  // on (read again inside the overlap) are skipped.
  let cursor = Date.now() - CHANGES_OVERLAP_MS;
  const seen = new Map<string, number>();
  const changedUuids = async (): Promise<Set<string>> => {
    const startedAt = Date.now();
    const notices = await store.changesSince(cursor - CHANGES_OVERLAP_MS);
    const uuids = new Set<string>();
    for (const n of notices) {
      if (seen.has(n.id)) continue;
      seen.set(n.id, n.at);
      uuids.add(n.uuid);
    }
    cursor = startedAt;
    for (const [id, at] of seen) if (at < cursor - 2 * CHANGES_OVERLAP_MS) seen.delete(id);
    return uuids;
  };
  const sweepGeneric = new Rotation(deps.sweepMs ?? SWEEP_MS, periodMs);
  const sweepHttp = new Rotation(deps.sweepMs ?? SWEEP_MS, periodMs);
  const sweepLive = new Rotation(deps.sweepMs ?? SWEEP_MS, periodMs);

  let running: Promise<void> | undefined;
  const round = (): Promise<void> => {
    running ??= (async () => {
      try {
        const generic = new Set(sweepGeneric.take(() => lot.keys('generic')));
        const http = new Set(sweepHttp.take(() => lot.keys('http')));
        // The identities of live rendezvous are swept too (a lost notice, as for parks).
        for (const uuid of sweepLive.take(() => deps.live?.uuids() ?? [])) http.add(uuid);
        let changed: Set<string> = new Set();
        try {
          changed = await changedUuids();
        } catch {
          // A dead store is not a reason to drop parked servers; the next round reads again.
        }
        for (const uuid of changed) {
          for (const key of lot.keysOfUuid('generic', uuid)) generic.add(key);
          if (lot.count('http', uuid) > 0 || deps.live?.has(uuid)) http.add(uuid);
        }
        await eachLimited([...generic], REVALIDATE_CONCURRENCY, checkCookie);
        await eachLimited([...http], REVALIDATE_CONCURRENCY, checkIdentity);
      } catch (err) {
        deps.log.warn('revalidation round failed', { reason: (err as Error).message });
      } finally {
        running = undefined;
      }
    })();
    return running;
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
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
