/**
 * Cookie checks for the relay, coalesced: concurrent checks of one cookie share one store read,
 * and a positive answer is reused for a second (its expiry still checked on every use). Under
 * load — a pool of parked sockets re-parking after every rendezvous, crowds of mobile clients —
 * this turns thousands of identical reads into a few.
 */
import { isLive } from '../server/cookies.js';
import type { CookieBinding, Store } from '../server/store/index.js';

/** How long a positive cookie check is reused. */
export const COOKIE_CACHE_MS = 1_000;

/** Uses of a cached cookie within its life that make it worth re-checking ahead of its expiry. */
const HOT_USES = 3;

/** A `resolveCookie` with coalescing and a short positive cache. */
export class CookieCache {
  private readonly inFlight = new Map<string, Promise<CookieBinding>>();
  private readonly good = new Map<string, { binding: CookieBinding; until: number; uses: number }>();

  constructor(
    private readonly store: Pick<Store, 'resolveCookie'>,
    private readonly ttlMs = COOKIE_CACHE_MS,
  ) {}

  /** Resolves a cookie like `Store.resolveCookie`. */
  resolveCookie(cookie: string): Promise<CookieBinding> {
    const now = Date.now();
    const hit = this.good.get(cookie);
    if (hit && hit.until > now && isLive(hit.binding.expiresAt, now)) return Promise.resolve(hit.binding);
    return this.inFlight.get(cookie) ?? this.refresh(cookie);
  }

  /** One store read of `cookie`, shared by every check while it is in flight. */
  private refresh(cookie: string): Promise<CookieBinding> {
    const p = this.store.resolveCookie(cookie).then(
      (binding) => {
        this.inFlight.delete(cookie);
        if (this.good.size > 10_000) this.good.clear();
        this.good.set(cookie, { binding, until: Date.now() + this.ttlMs, uses: 0 });
        return binding;
      },
      (err) => {
        this.inFlight.delete(cookie);
        this.good.delete(cookie);
        throw err;
      },
    );
    this.inFlight.set(cookie, p);
    return p;
  }

  /**
   * The cached binding of a cookie when a check within the last `ttlMs` found it and it has not
   * expired since: the synchronous fast path of a pairing (no promise, no store read).
   */
  peek(cookie: string): CookieBinding | undefined {
    const hit = this.good.get(cookie);
    if (!hit) return undefined;
    const now = Date.now();
    if (!(hit.until > now && isLive(hit.binding.expiresAt, now))) return undefined;
    // A hot cookie (used HOT_USES times since its last check: an agent re-parking after each
    // rendezvous, its clients pairing) in the last quarter of its life is checked again in the
    // background, so its pairings never wait for the store; a cookie used now and then is read
    // when it expires, as before (no more reads than uses). An answer is never older than ttlMs.
    if (++hit.uses >= HOT_USES && hit.until - now < this.ttlMs / 4 && !this.inFlight.has(cookie))
      this.refresh(cookie).catch(() => {});
    return hit.binding;
  }

  /** Forgets a cookie (it was refused, replaced or evicted). */
  forget(cookie: string): void {
    this.good.delete(cookie);
  }
}
