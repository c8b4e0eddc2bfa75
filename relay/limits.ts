/**
 * The relay's bounds past the handshake, in one place: mobile clients waiting for a hidden
 * server (per source address and in all), live splices per hidden server, a negative cache of
 * names that are no identity (so waiting for them costs no store polling), and the rate-limited
 * log path every refusal and limit record takes.
 */
import type { Socket } from 'node:net';
import { RendezvousError } from '../core/errors.js';
import { type Log, type LogFields, RefusalLogGate } from '../core/log.js';
import { sourceKeyOf } from '../server/limits.js';
import type { Identity, Store } from '../server/store/index.js';

/** What a mobile client over the per-hidden-server cap is told (also across a peer link). */
export const SPLICE_CAP_MESSAGE = 'too many live rendezvous for this hidden server';
/** What a mobile client over the per-source share of that cap is told. */
export const SPLICE_SOURCE_CAP_MESSAGE = `${SPLICE_CAP_MESSAGE} from your address`;
/**
 * Records of one kind (a refusal reason, a limit) logged per minute from one source address, and
 * from all sources together; the rest are counted (metrics) and reported as `suppressed`.
 */
export const LIMIT_LOG_PER_SOURCE = 20;
export const LIMIT_LOG_PER_KIND = 100;
/** How long "this name is no identity" is believed, and how long "it is" is. */
export const UNKNOWN_NAME_TTL_MS = 10_000;
export const KNOWN_NAME_TTL_MS = 60_000;

/**
 * The relay's one rate-limited log path (refusals, limits hit), with the API's two budgets: per
 * kind of record and source address (one noisy address cannot hide another's records), then per
 * kind (a flood spread over many addresses cannot fill the disk either). The next record logged
 * carries `suppressed`, the number left out; metrics still count every one.
 */
export class LimitLog {
  private readonly gate: RefusalLogGate;

  constructor(
    private readonly log: Log,
    /** The budgets (tests pass small ones, or a fake clock). */
    gate?: RefusalLogGate,
  ) {
    this.gate = gate ?? new RefusalLogGate(LIMIT_LOG_PER_SOURCE, LIMIT_LOG_PER_KIND);
  }

  /** Logs a record of kind `key` unless a budget is spent; true when it was written. */
  write(key: string, level: 'info' | 'warn', msg: string, fields: LogFields): boolean {
    const got = this.gate.take(key, String(fields.source ?? ''));
    if (!got.ok) return false;
    this.log[level](msg, got.suppressed > 0 ? { ...fields, suppressed: got.suppressed } : fields);
    return true;
  }

  /** Reports that `limit` stopped something that is no refusal of a peer (an accept failing at the descriptor ceiling). */
  hit(limit: string, fields: LogFields = {}): void {
    this.write(`limit ${limit}`, 'warn', 'limit reached', { event: 'limit', limit, ...fields });
  }
}

/** Counts held per key (a source address, a uuid) and in all, each with its own ceiling. */
export class Slots {
  private total = 0;
  private readonly byKey = new Map<string, number>();

  constructor(
    private readonly perKey: number,
    private readonly max: number,
  ) {}

  /** Held slots of `key`. */
  of(key: string): number {
    return this.byKey.get(key) ?? 0;
  }

  /** Takes one slot of `key`: 'key' or 'total' when a ceiling is reached, else an idempotent release. */
  take(key: string): 'key' | 'total' | (() => void) {
    const mine = this.of(key);
    if (mine >= this.perKey) return 'key';
    if (this.total >= this.max) return 'total';
    this.total++;
    this.byKey.set(key, mine + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total--;
      const n = this.of(key) - 1;
      if (n <= 0) this.byKey.delete(key);
      else this.byKey.set(key, n);
    };
  }
}

/** Bounds on mobile clients that wait for a hidden server to park. */
export class WaitingClients {
  private readonly slots: Slots;

  constructor(perSource: number, max: number) {
    this.slots = new Slots(perSource, max);
  }

  /** A waiting slot for `socket`, released by the returned function; throws BUSY when full. */
  enter(socket: Socket): () => void {
    const source = socket.remoteAddress ?? '?';
    const got = this.slots.take(source);
    if (typeof got === 'function') {
      // A client that hangs up frees its slot at once, not when its wait runs out.
      socket.once('close', got);
      return got;
    }
    const message =
      got === 'key' ? 'too many waiting clients from your address' : 'too many waiting clients, try again';
    throw new RendezvousError('BUSY', message, { permanent: false, retryAfter: 1 });
  }
}

/**
 * Live splices per hidden server (uuid) on this relay, with a cap, and per hidden server and
 * source address (IPv4 address, IPv6 /64) with a lower one: a stranger who knows a uuid (and its
 * public `I` cookie) can hold at most the per-source share of its cap, so clients from other
 * addresses still find room. A splice whose mobile side is a peer link has no source here (the
 * relay the mobile client reached counts it by its address).
 *
 * An identity's own `maxConcurrent` (issue 30, through `capOf`) replaces the relay's cap for it,
 * and its per-source share scales with it (`perSourceShare`).
 */
export class SplicesPerUuid {
  private readonly live = new Map<string, number>();
  private readonly bySource = new Map<string, number>();

  constructor(
    private readonly cap: number,
    private readonly perSource: number = cap,
    /** An identity's own cap, when it has one (its cached limits; never a store read). */
    private readonly capOf: (uuid: string) => number | undefined = () => undefined,
  ) {}

  /** Throws BUSY when `uuid` is at its cap, or at its per-source cap for `source` (checked before a mobile client is paired). */
  check(uuid: string, source?: string): void {
    const own = this.capOf(uuid);
    const cap = own ?? this.cap;
    if ((this.live.get(uuid) ?? 0) >= cap)
      throw new RendezvousError('BUSY', SPLICE_CAP_MESSAGE, { permanent: false, retryAfter: 5 });
    const share = own === undefined ? this.perSource : perSourceShare(own, this.cap, this.perSource);
    if (source === undefined || (this.bySource.get(sourceSlot(uuid, source)) ?? 0) < share) return;
    throw new RendezvousError('BUSY', SPLICE_SOURCE_CAP_MESSAGE, { permanent: false, retryAfter: 5 });
  }

  /** Counts one live splice of `uuid` (from `source`, when known; a race past `check` is still counted); returns its idempotent release. */
  add(uuid: string, source?: string): () => void {
    const slot = source === undefined ? undefined : sourceSlot(uuid, source);
    bump(this.live, uuid, 1);
    if (slot) bump(this.bySource, slot, 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      bump(this.live, uuid, -1);
      if (slot) bump(this.bySource, slot, -1);
    };
  }
}

/**
 * The per-source share of an identity's own cap `own`: the relay's proportion (`perSource` of
 * `cap`, 16 of 100 by default), but never below the relay's own share unless the cap itself is
 * lower — one person's sessions (a browser's parallel requests, a few shells) still fit from one
 * address, so an identity capped at 16 or fewer can be filled from one address.
 */
export function perSourceShare(own: number, cap: number, perSource: number): number {
  return Math.min(own, Math.max(perSource, Math.ceil((own * perSource) / cap)));
}

/** The per-source counter's key: the uuid and the source's key (IPv6 by /64). */
function sourceSlot(uuid: string, source: string): string {
  return `${uuid}\n${sourceKeyOf(source)}`;
}

function bump(counts: Map<string, number>, key: string, by: number): void {
  const n = (counts.get(key) ?? 0) + by;
  if (n <= 0) counts.delete(key);
  else counts.set(key, n);
}

/**
 * Whether a name is an identity, cached (negative answers briefly), with concurrent checks of
 * one name sharing a read. A store failure counts as "known": the relay then polls as before.
 */
export class KnownNames {
  private readonly cache = new Map<string, { known: boolean; until: number }>();
  private readonly inFlight = new Map<string, Promise<boolean>>();

  constructor(
    private readonly store: Pick<Store, 'getIdentity'>,
    private readonly now = Date.now,
    /** Hears each identity read (the limits cache takes its limits from it: one read, not two). */
    private readonly onRead?: (uuid: string, identity: Identity | undefined) => void,
  ) {}

  /** True unless `uuid` is no (enabled) identity. */
  known(uuid: string): Promise<boolean> {
    const hit = this.cache.get(uuid);
    if (hit && hit.until > this.now()) return Promise.resolve(hit.known);
    const pending = this.inFlight.get(uuid);
    if (pending) return pending;
    const p = this.store
      .getIdentity(uuid)
      .then(
        (identity) => {
          this.onRead?.(uuid, identity);
          const known = identity !== undefined && !identity.disabled;
          if (this.cache.size > 10_000) this.cache.clear();
          this.cache.set(uuid, {
            known,
            until: this.now() + (known ? KNOWN_NAME_TTL_MS : UNKNOWN_NAME_TTL_MS),
          });
          return known;
        },
        () => true,
      )
      .finally(() => this.inFlight.delete(uuid));
    this.inFlight.set(uuid, p);
    return p;
  }
}
