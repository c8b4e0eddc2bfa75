/**
 * The generic protocol's park: register with the API (once for the whole pool, again when the
 * relay refuses the cookie), dial the relay with the `R<c>` line and wait for `+OK`.
 */
import type { Socket } from 'node:net';
import { isRendezvousError, RendezvousError } from '../core/errors.js';
import type { RendezvousTriple } from '../core/triple.js';
import { type ApiUrls, registerWithApi } from './api.js';
import { Backoff, type BackoffBounds } from './backoff.js';
import type { ParkContext, Parker, ParkOutcome } from './parking.js';
import { dialRelay, relayAddressOf } from './relay-conn.js';

/** A park that lived this long before it failed starts the back-off afresh. */
const LONG_PARK_MS = 10_000;

/** Parks the generic way; the registration is shared by every slot of the pool. */
export class GenericParker implements Parker {
  private triple: RendezvousTriple | undefined;
  private registering: Promise<RendezvousTriple> | undefined;

  constructor(
    private readonly ctx: ParkContext,
    private readonly backoff: BackoffBounds,
  ) {}

  /** One park of `slot`: register if needed, dial, wait for `+OK`. */
  async park(slot: number): Promise<ParkOutcome> {
    const ctx = this.ctx;
    let triple: RendezvousTriple;
    try {
      triple = await this.ensureRegistered();
    } catch (err) {
      return ctx.stopped() ? { kind: 'stopped' } : { kind: 'fatal', error: err as RendezvousError };
    }
    let parkedAt = 0;
    const relay = relayAddressOf(triple);
    // Set when this park is ended on purpose, to re-park with news of the target.
    let recycled = false;
    let parkedSocket: Socket | undefined;
    try {
      const paired = dialRelay(triple, {
        signal: ctx.signal,
        target: () => ctx.target(),
        onConnected: (s) => {
          // Called right after the line was written: ctx.target() is what it told the relay.
          const target = ctx.target();
          // close() may have come while this connection was being made.
          if (ctx.stopped()) return void s.destroy();
          parkedSocket = s;
          parkedAt = Date.now();
          ctx.hold(s, relay, () => {
            recycled = true;
            // With an error, so the wait for the status line ends at once.
            s.destroy(new Error('re-parking'));
          });
          ctx.parked(slot, relay, target);
        },
      });
      try {
        const { socket, rid } = await paired;
        return { kind: 'paired', socket, relay, rid, fresh: true };
      } finally {
        if (parkedSocket) ctx.release(parkedSocket);
      }
    } catch (err) {
      if (ctx.stopped()) return { kind: 'stopped' };
      if (recycled) return { kind: 'again', cause: { after: 'target_changed' } };
      const fresh = parkedAt !== 0 && Date.now() - parkedAt > LONG_PARK_MS;
      const reason = (err as Error).message;
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
        ctx.registered({ host: triple.host, port: triple.port });
        return triple;
      } catch (err) {
        if (ctx.stopped()) throw new RendezvousError('ABORTED', 'agent stopped');
        if (isRendezvousError(err, 'AUTH_FAILED')) {
          if (ctx.codes.refused(sent)) throw err;
          continue;
        }
        if (isRendezvousError(err, 'BAD_REQUEST')) throw err;
        // 429, 503, unreachable, an answer that is not JSON: transient.
        const wait = backoff.next(isRendezvousError(err) ? err.retryAfter : undefined);
        await ctx.retryLater(wait, 'registration failed, retrying', (err as Error).message);
      }
    }
  }
}
