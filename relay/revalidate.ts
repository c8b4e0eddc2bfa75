/**
 * Periodic re-check of what is parked on this relay, so that a revocation in the store reaches
 * sockets that authenticated before it: a generic park whose cookie no longer resolves (rotated,
 * disabled, replaced, expired, or from before the R/I split) is told `-ERR`; an HTTP park whose
 * identity is gone, disabled, or rotated since its CONNECT (older generation) is closed. Each
 * round checks each key once (not each socket), a few at a time, and rounds are jittered so a
 * fleet of relays does not query the store in step.
 */
import { isRendezvousError } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { Store } from '../core/store.js';
import type { CookieCache } from './cookie-cache.js';
import type { Parked, ParkingLot } from './parking.js';

/** Default period between rounds (a revocation takes effect within about this long). */
export const REVALIDATE_MS = 10_000;
/** Rounds start after period × (1 ± this), at random. */
export const REVALIDATE_JITTER = 0.2;
/** Store reads in flight at once during a round. */
export const REVALIDATE_CONCURRENCY = 8;

/** What the re-check needs from the relay. */
export interface RevalidationDeps {
  store: Pick<Store, 'resolveCookie' | 'getIdentity'>;
  lot: ParkingLot;
  cookies: Pick<CookieCache, 'forget'>;
  log: Log;
  /** Ends a generic park with `-ERR <reason>`. */
  refuseGeneric: (p: Parked, reason: string) => void;
  periodMs?: number;
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
    const stale =
      !identity || identity.disabled
        ? lot.takeAll('http', uuid)
        : lot.takeWhere('http', uuid, (p) => (p.generation ?? 0) !== generation);
    for (const p of stale) p.socket.destroy();
  };

  let running: Promise<void> | undefined;
  const round = (): Promise<void> => {
    running ??= (async () => {
      try {
        await eachLimited(lot.keys('generic'), REVALIDATE_CONCURRENCY, checkCookie);
        await eachLimited(lot.keys('http'), REVALIDATE_CONCURRENCY, checkIdentity);
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
