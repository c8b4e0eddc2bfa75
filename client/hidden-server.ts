/**
 * The hidden side as a library, shaped like `net.Server`: `listen()` registers and keeps a pool
 * of parked relay connections; each rendezvous arrives as a `'connection'` socket (after `+OK`,
 * early bytes unread); the pool re-parks at once. Connection failures back off with jitter; a
 * refused cookie makes it register again; a refused secret stops it with an AUTH_FAILED error
 * instead of retrying forever. `exposeHiddenServer` (the CLI's `expose`) splices each
 * connection to a local port.
 *
 * This file is the facade: the events, `status()` and the records. How a slot parks is the
 * protocol's (client/park-generic.ts, client/park-http.ts, ending in a ParkOutcome), the codes'
 * bookkeeping is client/codes.ts's, the waits client/backoff.ts's, forwarding client/expose.ts's.
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { RendezvousError } from '../core/errors.js';
import { type Log, LogBudget, type LogFields, silentLog } from '../core/log.js';
import type { TargetState } from '../core/relay-line.js';
import { type AgentEvent, type AgentRendezvousEnd, type AgentStatus, formatUptime } from './agent-report.js';
import { type ApiUrls, apiUrlList } from './api.js';
import { BACKOFF_DEFAULTS, Backoff, type BackoffBounds, Sleeper } from './backoff.js';
import { OneTimeCodes, secretSettingsFrom } from './codes.js';
import { forwardToTarget } from './expose.js';
import { checkHiddenServerOptions, type ExposeOptions, type HiddenServerOptions } from './options.js';
import { GenericParker } from './park-generic.js';
import { HttpParker } from './park-http.js';
import type { NextPark, ParkContext, Parker } from './parking.js';
import { QUOTA_RECHECK_MS, QuotaHold, quotaWaitMs } from './quota-hold.js';
import { RendezvousRecords } from './rendezvous-records.js';

export { BACKOFF_DEFAULTS, MAX_RETRY_AFTER_MS } from './backoff.js';
export { AUTH_RETRY_STEPS, totpParamsFrom } from './codes.js';
export type { ExposeOptions, HiddenServerOptions } from './options.js';
export { QUOTA_RECHECK_MS } from './quota-hold.js';

/** A socket parked at a relay, waiting for a rendezvous. */
interface Parked {
  relay: string;
  /** Ends this park so the slot parks again at once (to tell the relay a new target state). */
  recycle: () => void;
}

/**
 * How long `'listening'` waits after the first park for the rest of the pool: a slot that cannot
 * park (a relay at its cap) must not hold the application back for good.
 */
const LISTENING_WAIT_MS = 10_000;

/** Park records logged per minute at most (a pool of 1,000 parking at once is one line per slot otherwise). */
const PARK_LOGS_PER_MINUTE = 20;

/**
 * A hidden server. Events: `listening` (the whole pool parked), `registered` ({host, port} or {relay}),
 * `parked` (pool slot), `connection` (a `net.Socket` per rendezvous), `reconnecting` (delay in
 * ms), `quota` (a QUOTA_EXCEEDED RendezvousError and the wait in ms: the identity's monthly
 * quota is spent, the pool waits — said once per wait, never fatal), `report` (an `AgentEvent`:
 * each park and re-park, each rendezvous's end, the target going down or up, each error — the
 * same things it logs), `error` (a RendezvousError; fatal ones —
 * AUTH_FAILED, BAD_REQUEST — stop it; emitted only when someone listens, otherwise logged and
 * raised as a process warning), `close` (after `close()` or a fatal error, once live connections
 * have ended). `status()` is its health at any moment.
 */
export class HiddenServer extends EventEmitter {
  private readonly log: Log;
  private readonly backoff: BackoffBounds;
  private readonly codes: OneTimeCodes;
  /** What a park attempt may see and do of this agent. */
  private readonly context: ParkContext;
  private stopped = false;
  private started = false;
  private closing = false;
  private readonly idle = new Map<Socket, Parked>();
  private readonly rendezvous: RendezvousRecords;
  private readonly sleeper = new Sleeper();
  /** The pool's one wait after a quota refusal (client/quota-hold.ts). */
  private readonly quota: QuotaHold;
  /** Aborted by `stop()`: ends pending API calls, relay connects and status reads at once. */
  private readonly stopper = new AbortController();

  // What status() reports.
  private startedAt = Date.now();
  private lastError: AgentStatus['lastError'];
  private target: TargetState | undefined;
  /** Why each slot parks next (a slot's first park is `start`). */
  private readonly parkCause = new Map<number, NextPark>();
  private readonly parkLogBudget = new LogBudget(PARK_LOGS_PER_MINUTE);
  /** Slots kept parking (the pool, until a relay that keeps one park per cookie shrinks it). */
  private poolSize = 1;
  /** Slots that have parked at least once (`'listening'` waits for all of them). */
  private readonly parkedSlots = new Set<number>();

  constructor(private readonly opts: HiddenServerOptions) {
    super();
    checkHiddenServerOptions(opts);
    this.log = opts.log ?? silentLog;
    this.backoff = opts.backoff ?? BACKOFF_DEFAULTS;
    this.rendezvous = new RendezvousRecords({
      uuid: opts.uuid,
      protocol: this.protocol,
      log: this.log,
      report: (e) => this.report(e),
    });
    const stopped = () => this.stopped;
    const sleep = (ms: number) => this.sleeper.sleep(ms);
    this.quota = new QuotaHold(sleep, stopped);
    const fromSecret = secretSettingsFrom(opts.secret);
    this.codes = new OneTimeCodes(
      {
        ...fromSecret,
        uuid: opts.uuid,
        auth: opts.auth,
        digits: opts.codeDigits ?? fromSecret.digits,
        encoding: opts.codeEncoding ?? fromSecret.encoding,
      },
      {
        sleep,
        stopped,
        log: this.log,
        authRetrySteps: opts.authRetrySteps,
      },
    );
    this.context = {
      opts,
      signal: this.stopper.signal,
      codes: this.codes,
      log: this.log,
      stopped,
      target: () => this.target,
      hold: (socket, relay, recycle) => this.idle.set(socket, { relay, recycle }),
      release: (socket) => this.idle.delete(socket),
      parked: (slot, relay, target) => {
        this.quota.passed(slot);
        this.noteParked(slot, relay, target);
        this.emit('parked', slot);
      },
      registered: (info) => {
        this.log.info('registered', { relay: 'relay' in info ? info.relay : `${info.host}:${info.port}` });
        this.emit('registered', info);
      },
      quotaExceeded: (slot, error) => this.quotaExceeded(slot, error),
      admit: (slot) => this.quota.admit(slot),
      retryLater: (wait, message, reason, fields) => this.retryLater(wait, message, reason, fields),
      shrinkPool: (size, why) => {
        this.poolSize = Math.min(this.poolSize, size);
        this.log.warn(why, { event: 'pool', pool: this.poolSize });
        this.maybeListening();
      },
    };
  }

  private get protocol(): 'generic' | 'http' {
    return this.opts.protocol === 'http' ? 'http' : 'generic';
  }

  /**
   * The agent's health now: uptime, sockets parked per relay, rendezvous served / live / failed,
   * bytes, the last rendezvous (UTC time, outcome, rid), the target's state, the last error.
   */
  status(): AgentStatus {
    const parked: Record<string, number> = {};
    for (const p of this.idle.values()) parked[p.relay] = (parked[p.relay] ?? 0) + 1;
    const out: AgentStatus = {
      uuid: this.opts.uuid,
      protocol: this.protocol,
      startedAt: new Date(this.startedAt).toISOString(),
      uptimeMs: Date.now() - this.startedAt,
      parked,
      ...this.rendezvous.counters(),
      target: this.target ?? 'unknown',
    };
    const lastRendezvous = this.rendezvous.last();
    if (lastRendezvous) out.lastRendezvous = lastRendezvous;
    if (this.lastError) out.lastError = { ...this.lastError };
    return out;
  }

  /**
   * Tells the agent whether its target is reachable (`exposeHiddenServer` does, from each
   * connect and its probe; an application that forwards elsewhere may too). Every later park
   * reports it to the relay; a change is logged (WARN down, INFO up) and re-parks the idle
   * sockets so the relay learns it now rather than at the next rendezvous.
   */
  noteTarget(state: TargetState, fields: { target?: string; reason?: string } = {}): void {
    const before = this.target;
    this.target = state;
    if (before === state) return;
    if (state === 'down')
      this.log.warn('target down', { event: 'target', target: fields.target, reason: fields.reason });
    else if (before !== undefined) this.log.info('target up', { event: 'target', target: fields.target });
    this.report({ event: 'target', state, ...fields });
    if (before === undefined) return; // the first knowledge: parks from now on carry it
    for (const [socket, p] of this.idle) {
      // A socket with bytes waiting is being paired right now: leave it.
      if (socket.readableLength === 0) p.recycle();
    }
  }

  /** Overrides how a live rendezvous is recorded as ending, and why (the first call wins). */
  noteRendezvousEnd(socket: Socket, end: AgentRendezvousEnd, reason?: string): void {
    this.rendezvous.noteEnd(socket, end, reason);
  }

  /** True between `listen()` and `close()`. */
  get listening(): boolean {
    return this.started && !this.stopped;
  }

  /** Live rendezvous connections, like `net.Server#getConnections`. */
  getConnections(cb: (err: Error | null, count: number) => void): void {
    cb(null, this.rendezvous.size);
  }

  /**
   * Registers and starts parking; `cb` runs on `'listening'`: once every slot of the pool has
   * parked (so `status().parked` counts the whole pool), or LISTENING_WAIT_MS after the first
   * park when some slot cannot park.
   */
  listen(cb?: () => void): this {
    if (cb) this.once('listening', cb);
    return this.start();
  }

  /**
   * Stops parking (parked sockets are closed); live connections go on. `cb` and `'close'` come
   * once the last of them has ended.
   */
  close(cb?: (err?: Error) => void): this {
    if (cb) this.once('close', cb);
    this.closing = true;
    this.stop();
    this.maybeClosed();
    return this;
  }

  /** Starts registering and parking (`listen()` without a callback). */
  start(): this {
    if (this.started) return this;
    this.started = true;
    this.startedAt = Date.now();
    this.poolSize = this.opts.pool ?? 1;
    this.on('parked', (slot: number) => {
      const first = this.parkedSlots.size === 0;
      this.parkedSlots.add(slot);
      if (first && this.poolSize > 1) setTimeout(() => this.maybeListening(true), LISTENING_WAIT_MS).unref();
      this.maybeListening();
    });
    const http = this.opts.protocol === 'http';
    if (http && !this.opts.relay)
      throw new RendezvousError('BAD_REQUEST', 'the http protocol needs the relay URL');
    if (!http && !this.opts.api)
      throw new RendezvousError('BAD_REQUEST', 'the generic protocol needs the API URL');
    if (!http) apiUrlList(this.opts.api as ApiUrls); // a malformed list fails here, not on each retry
    const parker = http ? new HttpParker(this.context) : new GenericParker(this.context, this.backoff);
    for (let i = 0; i < (this.opts.pool ?? 1); i++) void this.parkSlot(parker, i);
    return this;
  }

  private listeningEmitted = false;

  /** Emits `'listening'` once: every slot parked (or `anyway`, after the wait, with one at least). */
  private maybeListening(anyway = false): void {
    if (this.listeningEmitted || this.stopped || this.parkedSlots.size === 0) return;
    if (!anyway && this.parkedSlots.size < this.poolSize) return;
    this.listeningEmitted = true;
    this.emit('listening');
  }

  /** Stops parking; live spliced connections are left to finish. */
  stop(): void {
    this.stopped = true;
    this.stopper.abort();
    for (const s of this.idle.keys()) s.destroy();
    this.sleeper.stop();
    this.quota.stop();
  }

  /** One pool slot: park, act on how the park ended, again until stopped. */
  private async parkSlot(parker: Parker, slot: number): Promise<void> {
    const backoff = new Backoff(this.backoff);
    while (!this.stopped) {
      // A quota wait holds every slot here (the parker checks again where a slot waits inside it).
      await this.quota.admit(slot);
      const o = await parker.park(slot);
      if (o.fresh) backoff.reset();
      // The prober's outcome other than quota (or a re-park) ends the pool's quota wait.
      if (o.kind !== 'quota' && o.kind !== 'again') this.quota.passed(slot);
      switch (o.kind) {
        case 'stopped':
          return;
        case 'fatal':
          this.fail(o.error);
          return;
        case 'paired':
          this.handOver(o.socket, o.relay, o.rid);
          break;
        case 'again':
          if (o.cause) this.parkCause.set(slot, o.cause);
          break;
        case 'quota':
          break; // the wait is the pool's: at the top of the loop
        case 'retry': {
          const wait = o.message ? backoff.next(o.retryAfter) : backoff.first();
          this.parkCause.set(slot, o.cause);
          if (o.message) await this.retryLater(wait, o.message, o.cause.reason, o.fields);
          else await this.sleeper.sleep(wait);
        }
      }
    }
  }

  /** The one back-off step after a transient failure: noted as the last error, `'reconnecting'`, then the wait. */
  private async retryLater(
    wait: number,
    message: string,
    reason: string,
    fields: LogFields = {},
  ): Promise<void> {
    this.noteError(message, reason, { ...fields, inMs: wait });
    this.emit('reconnecting', wait);
    await this.sleeper.sleep(wait);
  }

  /**
   * A quota refusal of `slot`: the pool's wait starts (to the next UTC month, at most
   * `quotaRecheckMs`), said in one WARN line and a `'quota'` event — once per wait, however many
   * slots had dialled before the verdict.
   */
  private quotaExceeded(slot: number, error: RendezvousError): void {
    this.parkCause.set(slot, { after: 'refusal', reason: error.message });
    const wait = quotaWaitMs(error.retryAfter, this.opts.quotaRecheckMs ?? QUOTA_RECHECK_MS);
    if (!this.quota.refused(slot, wait)) return;
    this.noteError(
      `quota exceeded for ${this.opts.uuid}: the operator's monthly quota is spent; parking again in ${formatUptime(wait)}`,
      error.message,
      { inMs: wait },
    );
    this.emit('quota', error, wait);
    this.emit('reconnecting', wait);
  }

  private maybeClosed(): void {
    if (this.closing && this.rendezvous.size === 0) {
      this.closing = false;
      setImmediate(() => this.emit('close'));
    }
  }

  /**
   * A fatal error: stop, then tell the application. An 'error' event nobody listens to would
   * crash the process (Node's rule), so without a listener it is logged and raised as a process
   * warning instead; `'close'` follows either way.
   */
  private fail(err: RendezvousError): void {
    if (this.stopped) return;
    this.stop();
    this.closing = true;
    this.lastError = { at: new Date().toISOString(), reason: err.message };
    this.log.error('giving up', { event: 'error', reason: err.message });
    this.report({ event: 'error', reason: err.message, fatal: true });
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else
      process.emitWarning(
        `rendezvous hidden server ${this.opts.uuid} stopped: ${err.message}`,
        'RendezvousWarning',
      );
    this.maybeClosed();
  }

  private report(e: AgentEvent): void {
    this.emit('report', e);
  }

  /** A transient failure: logged (WARN, event `error`), kept as the last error, reported. */
  private noteError(msg: string, reason: string, fields: LogFields = {}): void {
    this.lastError = { at: new Date().toISOString(), reason };
    this.log.warn(msg, { event: 'error', reason, ...fields });
    this.report({ event: 'error', reason, fatal: false });
  }

  /** A slot parked: log it (bounded), report it. */
  private noteParked(slot: number, relay: string, target: TargetState | undefined): void {
    const cause = this.parkCause.get(slot) ?? { after: 'start' as const };
    this.parkCause.set(slot, { after: 'rendezvous' }); // until something else ends this park
    const e: AgentEvent = { event: 'park', relay, protocol: this.protocol, slot, ...cause };
    if (target) e.target = target;
    this.report(e);
    const budget = this.parkLogBudget.take('park');
    if (!budget.ok) return;
    this.log.info(cause.after === 'start' ? 'parked' : 're-parked', {
      event: 'park',
      relay,
      protocol: this.protocol,
      slot,
      after: cause.after === 'start' ? undefined : cause.after,
      reason: cause.reason,
      target,
      suppressed: budget.suppressed || undefined,
    });
  }

  /** A rendezvous: hand the socket to the application; its end is recorded when it closes. */
  private handOver(socket: Socket, relay: string, rid: string | undefined): void {
    this.rendezvous.open(socket, relay, rid, () => this.maybeClosed());
    if (this.listenerCount('connection') === 0) {
      // Nobody to serve it: end it rather than leave the mobile client hanging.
      socket.destroy();
      return;
    }
    this.emit('connection', socket);
  }
}

/** A hidden server (`listen()` it); `onConnection` is added as a `'connection'` listener. */
export function createHiddenServer(
  options: HiddenServerOptions,
  onConnection?: (socket: Socket) => void,
): HiddenServer {
  const server = new HiddenServer(options);
  if (onConnection) server.on('connection', onConnection);
  return server;
}

/**
 * A hidden server that splices every rendezvous to `opts.target` — the CLI's `expose`. It knows
 * whether the target is reachable from each connect, and from a TCP probe at start and every
 * `probeEveryMs` while idle; each park tells the relay (`target=`, `Rendezvous-Target`).
 */
export function exposeHiddenServer(opts: ExposeOptions): HiddenServer {
  checkHiddenServerOptions(opts, true);
  return forwardToTarget(new HiddenServer(opts), opts);
}
