/**
 * The generic protocol's park: register with the API (once for the whole pool, again when the
 * relay refuses the cookie), dial the relay with the `R<c>` line and wait for `+OK`.
 */
import type { Socket } from 'node:net';
import { isRendezvousError, RendezvousError } from '../core/errors.js';
import type { RendezvousTriple } from '../core/triple.js';
import { refusalOf } from './answers.js';
import { type ApiUrls, registerWithApi } from './api.js';
import { Backoff, type BackoffBounds } from './backoff.js';
import type { ParkContext, Parker, ParkOutcome } from './parking.js';
import { dialRelay, relayAddressOf, tlsPortOf } from './relay-conn.js';

/** Connect timeout for a park at a relay's direct address (the front gets the usual one). */
export const DIRECT_CONNECT_TIMEOUT_MS = 3_000;

/** A refusal that says the relay itself is going away (its drain), not the registration. */
const RELAY_LEAVING = /draining|shutting down/;

/** The direct address a relay named (`+OK direct=`), for parks on the registration it came with. */
interface Direct {
  triple: RendezvousTriple;
  host: string;
  port: number;
  /** `host:port`, as parks report their relay. */
  address: string;
}

/** A park that lived this long before it failed starts the back-off afresh. */
const LONG_PARK_MS = 10_000;

/**
 * A park closed without a word this soon after another slot parked with the same cookie was
 * displaced by it: the relay keeps one parked socket per cookie (the original's), and this many
 * displacements in a row make the pool shrink to one.
 */
const DISPLACED_WITHIN_MS = 2_000;
const DISPLACEMENTS_TO_SHRINK = 2;

/** Parks the generic way; the registration is shared by every slot of the pool. */
export class GenericParker implements Parker {
  private triple: RendezvousTriple | undefined;
  private registering: Promise<RendezvousTriple> | undefined;
  /** The latest park of any slot: which, on which registration, when. */
  private lastPark: { slot: number; triple: RendezvousTriple; at: number } | undefined;
  private displaced = 0;
  /** Slots allowed to park (the pool, until a relay that keeps one park per cookie shrinks it). */
  private slots = Number.POSITIVE_INFINITY;
  /** The relay said our registration was replaced: the next registration's answer says by whom. */
  private twinSuspected = false;
  /** The other agents already reported, by address (`''`: a server that does not say). */
  private readonly twinsReported = new Set<string>();
  /**
   * Where this registration's parks go instead of the triple's front: the relay that answered the
   * latest rendezvous, so the pool converges on one relay and the look-up names it. Forgotten when
   * that relay cannot be reached, closes a park or drains, and with a new registration.
   */
  private direct: Direct | undefined;
  /** Parks waiting now, by socket: where, and how to end one so it parks at the direct address. */
  private readonly waiting = new Map<Socket, { relay: string; move: () => void }>();

  constructor(
    private readonly ctx: ParkContext,
    private readonly backoff: BackoffBounds,
  ) {}

  /** One park of `slot`: register if needed, dial, wait for `+OK`. */
  async park(slot: number): Promise<ParkOutcome> {
    const ctx = this.ctx;
    if (slot >= this.slots) return { kind: 'stopped' };
    let triple: RendezvousTriple;
    try {
      triple = await this.ensureRegistered();
    } catch (err) {
      if (ctx.stopped()) return { kind: 'stopped' };
      if (isRendezvousError(err, 'QUOTA_EXCEEDED')) return this.quota(slot, err);
      return { kind: 'fatal', error: err as RendezvousError };
    }
    let parkedAt = 0;
    const direct = this.direct?.triple === triple ? this.direct : undefined;
    const dialled = direct ? { ...triple, host: direct.host, port: direct.port } : triple;
    const relay = relayAddressOf(dialled);
    // Set when this park is ended on purpose, to re-park with news of the target.
    let recycled = false;
    // Set when this park is ended on purpose, to re-park at the direct address.
    let moved = false;
    let parkedSocket: Socket | undefined;
    try {
      const paired = dialRelay(dialled, {
        signal: ctx.signal,
        connectTimeoutMs: direct ? DIRECT_CONNECT_TIMEOUT_MS : undefined,
        target: () => ctx.target(),
        onConnected: (s) => {
          // Called right after the line was written: ctx.target() is what it told the relay.
          const target = ctx.target();
          // close() may have come while this connection was being made.
          if (ctx.stopped()) return void s.destroy();
          parkedSocket = s;
          parkedAt = Date.now();
          this.lastPark = { slot, triple, at: parkedAt };
          ctx.hold(s, relay, () => {
            recycled = true;
            // With an error, so the wait for the status line ends at once.
            s.destroy(new Error('re-parking'));
          });
          this.waiting.set(s, {
            relay,
            move: () => {
              moved = true;
              s.destroy(new Error('moving to the direct address'));
            },
          });
          ctx.parked(slot, relay, target);
        },
      });
      try {
        const { socket, rid, direct: named } = await paired;
        // Paired: no longer a park to move.
        this.waiting.delete(socket);
        if (named) this.follow(triple, named);
        return { kind: 'paired', socket, relay, rid, fresh: true };
      } finally {
        if (parkedSocket) {
          ctx.release(parkedSocket);
          this.waiting.delete(parkedSocket);
        }
      }
    } catch (err) {
      if (ctx.stopped()) return { kind: 'stopped' };
      if (recycled) return { kind: 'again', cause: { after: 'target_changed' } };
      if (moved) return { kind: 'again', cause: { after: 'moved' } };
      if (isRendezvousError(err, 'QUOTA_EXCEEDED')) {
        // Spent for the month: the registration is dropped (it would expire during the wait).
        if (this.triple === triple) this.triple = undefined;
        return this.quota(slot, err);
      }
      const reason = (err as Error).message;
      const refused = isRendezvousError(err, 'RELAY_REFUSED');
      if (refused && RELAY_LEAVING.test(reason)) {
        // The relay is going (a drain), not the cookie: every slot parked there hears it, the
        // direct one and those through the front alike; park again at once on the same
        // registration (the front leads to a live relay; a closed listener refuses and backs off).
        if (this.direct?.address === relay) this.direct = undefined;
        return { kind: 'again', cause: { after: 'refusal', reason } };
      }
      if (direct && this.direct === direct && !refused) {
        // The direct relay is unreachable or closed the park (killed, restarted): the front again,
        // at once; other refusals concern the registration.
        this.direct = undefined;
        if (parkedAt === 0) return { kind: 'again', cause: { after: 'failure', reason }, fresh: false };
      }
      const fresh = parkedAt !== 0 && Date.now() - parkedAt > LONG_PARK_MS;
      if (isRendezvousError(err, 'RELAY_REFUSED') && /replaced/.test(reason) && this.triple === triple)
        this.twinSuspected = true;
      else if (!isRendezvousError(err, 'RELAY_REFUSED') && parkedAt !== 0)
        this.noteClosed(slot, triple, parkedAt);
      if (isRendezvousError(err, 'RELAY_REFUSED')) {
        // Any -ERR on a park (ours: unknown, expired or replaced cookie, draining relay; the
        // original's: "not registered", "invalid cookie") means this registration cannot be
        // parked on: register again, after the backoff so a refusing relay is not hammered.
        if (this.triple === triple) this.triple = undefined;
        return {
          kind: 'retry',
          fresh,
          cause: { after: 'refusal', reason },
          message: 'relay refused the park, registering again',
          fields: { relay },
        };
      }
      return {
        kind: 'retry',
        fresh,
        cause: { after: 'failure', reason },
        message: 'relay connection failed, retrying',
        fields: { relay },
      };
    }
  }

  /** A quota refusal: told to the agent (the pool's wait starts), which ends this attempt. */
  private quota(slot: number, err: RendezvousError): ParkOutcome {
    this.ctx.quotaExceeded(slot, err);
    return { kind: 'quota' };
  }

  /**
   * A `+OK` on `triple`'s registration named its relay's direct address: parks go there from now
   * on, and parks waiting elsewhere (the front) move there, so the whole pool sits on the relay
   * the look-up names. A TLS triple's parks stay on the front (its cookie never goes in clear).
   */
  private follow(triple: RendezvousTriple, named: { host: string; port: number }): void {
    if (this.triple !== triple || tlsPortOf(triple)) return;
    const address = relayAddressOf({ ...triple, host: named.host, port: named.port });
    if (this.direct?.address === address) return;
    this.direct = { triple, host: named.host, port: named.port, address };
    for (const [socket, w] of this.waiting) {
      // A socket with bytes waiting is being paired right now: leave it.
      if (w.relay !== address && socket.readableLength === 0) w.move();
    }
  }

  /**
   * The relay closed a park of `slot` without a status line: displaced, when another slot had
   * just parked with the same cookie. Past DISPLACEMENTS_TO_SHRINK, the pool shrinks to one slot,
   * said once: the relay keeps one parked socket per cookie, so more slots only churn.
   */
  private noteClosed(slot: number, triple: RendezvousTriple, parkedAt: number): void {
    const lp = this.lastPark;
    if (!lp || lp.slot === slot || lp.triple !== triple || lp.at < parkedAt) return;
    if (Date.now() - lp.at > DISPLACED_WITHIN_MS) return;
    if (++this.displaced < DISPLACEMENTS_TO_SHRINK || this.slots === 1) return;
    this.slots = 1;
    this.ctx.shrinkPool(
      1,
      'the relay keeps one parked connection per registration (as the original node-rendezvous does): pool reduced to 1',
    );
  }

  /**
   * Our registration was replaced (the relay said so), and this agent did not replace it: another
   * agent registered the same uuid. The registration that takes it back is told when and from
   * where the other one registered (`replaced`); said once per other agent, on each side, since
   * each learns of the other from its own registration's answer.
   */
  private reportTwin(triple: RendezvousTriple): void {
    this.twinSuspected = false;
    const other = triple.replaced;
    const key = other?.from ?? '';
    if (this.twinsReported.has(key)) return;
    this.twinsReported.add(key);
    const uuid = this.ctx.opts.uuid;
    // A server that does not say (the original, a compat identity): when we noticed, no address.
    const who = other
      ? `from ${other.from} at ${other.at}`
      : `at ${new Date().toISOString()} (from another process or machine; this server does not say which)`;
    this.ctx.log.warn(
      `another agent registered uuid ${uuid} ${who} (this agent took it back); two agents on one uuid replace each other's registration every time — stop one, or run one agent with --pool N to keep several connections parked`,
      {
        event: 'error',
        reason: 'registration replaced by another agent',
        ...(other ? { other: other.from, otherAt: other.at } : {}),
      },
    );
  }

  private ensureRegistered(): Promise<RendezvousTriple> {
    if (this.triple) return Promise.resolve(this.triple);
    this.registering ??= this.register().finally(() => {
      this.registering = undefined;
    });
    return this.registering;
  }

  /** Registers with the API until it answers: a refused code tries the next step's, a wrong secret throws. */
  private async register(): Promise<RendezvousTriple> {
    const ctx = this.ctx;
    const backoff = new Backoff(this.backoff);
    for (;;) {
      const sent = await ctx.codes.next();
      try {
        const triple = await registerWithApi(ctx.opts.api as ApiUrls, ctx.opts.uuid, sent.code, ctx.signal);
        ctx.codes.accepted(sent.step);
        this.triple = triple;
        if (this.twinSuspected) this.reportTwin(triple);
        ctx.registered({ host: triple.host, port: triple.port });
        return triple;
      } catch (err) {
        if (ctx.stopped()) throw new RendezvousError('ABORTED', 'agent stopped');
        const refusal = isRendezvousError(err) ? refusalOf(err) : undefined;
        if (refusal) {
          const verdict = ctx.codes.refused(sent, refusal);
          if (verdict) throw verdict;
          continue;
        }
        // A malformed request, or a URL that is not a registration API: the configuration is wrong.
        // A spent quota (should an API say so) is the agent's long wait, not this loop's back-off.
        if (
          isRendezvousError(err, 'BAD_REQUEST') ||
          isRendezvousError(err, 'PROTOCOL') ||
          isRendezvousError(err, 'QUOTA_EXCEEDED')
        )
          throw err;
        // 429, 503, unreachable, an answer that is not JSON: transient.
        const wait = backoff.next(isRendezvousError(err) ? err.retryAfter : undefined);
        await ctx.retryLater(wait, 'registration failed, retrying', (err as Error).message);
      }
    }
  }
}
