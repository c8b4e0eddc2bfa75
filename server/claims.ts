/**
 * Where one-time codes are claimed and guesses counted. Replication between the replicas of a
 * global table lags, so every region claims on one replica: the claims region. It is deployed
 * as the table's home (`RENDEZVOUS_HOME_REGION`); an operator moves it with one command
 * (`rendezvous claims-region <region>`, which writes the claims-region record) when that region
 * is down, and every region follows within `refreshMs`, reading the record from its own replica.
 * No redeploy: every region's functions and relays may already use every replica.
 */
import { tableFromEnv } from './config.js';
import { Store } from './store/index.js';

/** How long a region trusts the claims-region record it read (one read per process per period). */
export const CLAIMS_REFRESH_MS = 10_000;

const REGION = /^[a-z]{2}(-[a-z]+)+-\d$/;

/** What a router needs: this region's replica and how to reach another region's. */
export interface ClaimsRouterOptions {
  /** This region's replica (the record is read here, so a move is seen while the old region is down). */
  local: Store;
  /** This region (`AWS_REGION` / `RELAY_REGION`); undefined: one region, claims stay local. */
  here?: string;
  /** The claims region as deployed (`RENDEZVOUS_HOME_REGION`); undefined: this region. */
  deployed?: string;
  /** A store on `region`'s replica of the same table (made once per region). */
  storeFor: (region: string) => Store;
  refreshMs?: number;
}

/** Resolves the claims region (the record on the local replica, else the deployed one). */
export class ClaimsRouter {
  private readonly stores = new Map<string, Store>();
  private region: string | undefined;
  private readAt = Number.NEGATIVE_INFINITY;
  private reading?: Promise<void>;

  constructor(private readonly opts: ClaimsRouterOptions) {
    this.region = opts.deployed || opts.here;
  }

  /** The claims region as last resolved (before any read: the deployed one). */
  get current(): string | undefined {
    return this.region;
  }

  /**
   * The store to claim on: undefined when it is this region's own replica (the caller's `store`),
   * else the claims region's replica. A record that cannot be read keeps the last known region:
   * a local store failure then fails the request itself, and a move is never undone by one.
   */
  async claims(nowMs: number = Date.now()): Promise<Store | undefined> {
    if (nowMs - this.readAt >= (this.opts.refreshMs ?? CLAIMS_REFRESH_MS)) {
      this.reading ??= this.refresh(nowMs).finally(() => {
        this.reading = undefined;
      });
      await this.reading;
    }
    const region = this.region;
    if (!region || region === this.opts.here) return undefined;
    let store = this.stores.get(region);
    if (!store) {
      store = this.opts.storeFor(region);
      this.stores.set(region, store);
    }
    return store;
  }

  private async refresh(nowMs: number): Promise<void> {
    try {
      const record = await this.opts.local.getClaimsRegion();
      this.region =
        record && REGION.test(record.region) ? record.region : this.opts.deployed || this.opts.here;
      this.readAt = nowMs;
    } catch {
      // Unreadable: try again on the next request; the last known region stands meanwhile.
    }
  }

  /** Releases the stores made for other regions. */
  close(): void {
    for (const s of this.stores.values()) s.close();
    this.stores.clear();
  }
}

/** The outcome of a move, per replica written. */
export interface ClaimsMove {
  region: string;
  written: string[];
  failed: Array<{ region: string; reason: string }>;
}

/**
 * Moves the claims region to `to`: writes the record on every replica of `regions` it can reach
 * (the unreachable ones get it by replication when they are back). Succeeds when `to`'s own
 * replica took it; every region then follows within CLAIMS_REFRESH_MS.
 */
export async function moveClaimsRegion(
  to: string,
  regions: string[],
  storeFor: (region: string) => Store,
  nowMs: number = Date.now(),
): Promise<ClaimsMove> {
  if (!REGION.test(to)) throw new Error(`not a region name: ${to}`);
  if (!regions.includes(to))
    throw new Error(`${to} is not one of the table's regions (${regions.join(', ')})`);
  const results = await Promise.all(
    regions.map(async (region) => {
      const store = storeFor(region);
      try {
        await store.setClaimsRegion(to, nowMs);
        return { region, ok: true as const };
      } catch (err) {
        const detail = (err as { detail?: unknown }).detail;
        return { region, ok: false as const, reason: typeof detail === 'string' ? detail : String(err) };
      }
    }),
  );
  const move: ClaimsMove = {
    region: to,
    written: results.filter((r) => r.ok).map((r) => r.region),
    failed: results.flatMap((r) => (r.ok ? [] : [{ region: r.region, reason: r.reason }])),
  };
  if (!move.written.includes(to))
    throw new Error(
      `the claims region was not moved: ${to}'s replica did not take the record (${
        move.failed.find((f) => f.region === to)?.reason ?? 'unreachable'
      })`,
    );
  return move;
}

/**
 * The router a deployed function or relay uses: this region from `AWS_REGION` (or `here`), the
 * deployed claims region from `RENDEZVOUS_HOME_REGION`; undefined without one (one region, or
 * the local stack: claims stay on `local`).
 */
export function claimsRouterFromEnv(
  local: Store,
  env: NodeJS.ProcessEnv = process.env,
  here: string | undefined = env.AWS_REGION,
): ClaimsRouter | undefined {
  const deployed = env.RENDEZVOUS_HOME_REGION?.trim();
  if (!deployed) return undefined;
  return new ClaimsRouter({
    local,
    here: here?.trim() || undefined,
    deployed,
    storeFor: (region) => new Store({ table: tableFromEnv(env), region }),
  });
}
