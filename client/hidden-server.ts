/**
 * The hidden side as a library, shaped like `net.Server`: `listen()` registers and keeps a pool
 * of parked relay connections; each rendezvous arrives as a `'connection'` socket (after `+OK`,
 * early bytes unread); the pool re-parks at once. Connection failures back off with jitter; a
 * refused cookie makes it register again; a refused secret stops it with an AUTH_FAILED error
 * instead of retrying forever. `exposeHiddenServer` (the CLI's `expose`) splices each
 * connection to a local port.
 */
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { Secret, URI } from 'otpauth';
import { isRendezvousError, RendezvousError } from '../core/errors.js';
import { HeadDecoder, parseResponseHead, type ResponseHead } from '../core/http-head.js';
import { type Log, LogBudget, type LogFields, silentLog } from '../core/log.js';
import type { TargetState } from '../core/relay-line.js';
import { connectTcp, readPreamble } from '../core/socket-reader.js';
import { splice } from '../core/splice.js';
import { codeForStep, TOTP_DEFAULTS, type TotpParams, timeStep } from '../core/totp.js';
import type { RendezvousTriple } from '../core/triple.js';
import {
  type AgentEvent,
  type AgentRendezvousEnd,
  type AgentStatus,
  type ParkCause,
  PROBE_EVERY_MS,
  probeTarget,
} from './agent-report.js';
import { type ApiUrls, apiUrlList, registerWithApi } from './api.js';
import { checkHiddenServerOptions, invalidOption } from './options.js';
import { CONNECT_TIMEOUT_MS, dialRelay, relayAddressOf } from './relay-conn.js';

/** Options of a hidden server. Nothing is read from the environment here (the CLI does that). */
export interface HiddenServerOptions {
  /** `generic` (default): register with the API, park with `R<c>`. `http`: park with CONNECT. */
  protocol?: 'generic' | 'http';
  /**
   * Registration API base URL (generic protocol), or several (one per region, or a
   * comma-separated string): tried in order from the last that answered, failing over when one
   * does not answer or answers 5xx — never after a refused code.
   */
  api?: ApiUrls;
  /** The relay's HTTP-specific endpoint, `http://host:port` or `https://host` (http protocol). */
  relay?: string;
  uuid: string;
  /** Base32 secret, or an `otpauth://` URI (which also carries digits and step). */
  secret: string;
  /** Parked connections kept at once (default 1). */
  pool?: number;
  /** Reconnect backoff bounds (default 250 ms → 30 s, jittered). */
  backoff?: { minMs: number; maxMs: number };
  /**
   * Refused codes tolerated on the steps after the first refused one before the secret is taken
   * for wrong (default AUTH_RETRY_STEPS). A restarted agent's first codes are often refused as
   * replays of what the previous process used in the same step.
   */
  authRetrySteps?: number;
  /**
   * Where the agent's records go (core/log.ts schema): parks and re-parks, each rendezvous's
   * end (rid, bytes, duration, outcome), the target going down or up, errors.
   */
  log?: Log;
}

/** Options of `exposeHiddenServer`: a hidden server that forwards to a local port. */
export interface ExposeOptions extends HiddenServerOptions {
  /** The local service each rendezvous is spliced to. */
  target: { host: string; port: number };
  /**
   * How often the target is probed with a TCP handshake while idle (default PROBE_EVERY_MS;
   * 0: never), so that each park tells the relay whether it is reachable. No probe runs while a
   * rendezvous is live or when one reached the target within the last period.
   */
  probeEveryMs?: number;
}

/** Backoff defaults: 250 ms doubling to 30 s. */
export const BACKOFF_DEFAULTS = { minMs: 250, maxMs: 30_000 } as const;

/**
 * Distinct steps beyond the first whose codes are tried before giving up: the current step,
 * then three more (each taken as soon as the ±1 drift window admits it, and a refused early
 * one again once it is current), so a wrong secret is concluded at the second step boundary
 * after the first refusal (30–60 s at 30 s steps), never earlier.
 */
export const AUTH_RETRY_STEPS = 3;

/** The longest `Retry-After` the agent honours as given; longer ones are capped to this. */
export const MAX_RETRY_AFTER_MS = 300_000;

/** Turns a base32 secret or an otpauth URI into TOTP parameters. */
export function totpParamsFrom(secret: string): TotpParams {
  if (secret.startsWith('otpauth://')) {
    let otp: ReturnType<typeof URI.parse>;
    try {
      otp = URI.parse(secret);
    } catch {
      // otpauth's own message may quote the URI, secret included: never pass it on, not even as a cause.
      throw invalidOption('secret', 'not a valid otpauth:// URI');
    }
    if (!('period' in otp)) throw new RendezvousError('BAD_REQUEST', 'otpauth URI is not TOTP');
    // node-rendezvous wrote digits=40 (its unreduced codes); this agent computes RFC 6238 codes only.
    if (otp.digits > 10)
      throw new RendezvousError(
        'BAD_REQUEST',
        `RENDEZVOUS_SECRET asks for ${otp.digits}-digit codes (node-rendezvous's): this agent computes 6–10 digit RFC 6238 codes; keep the original client for this identity, or rotate it to a strict one (see "Migrating from node-rendezvous")`,
      );
    return {
      secret: otp.secret.base32,
      digits: otp.digits,
      step: otp.period,
      algorithm: otp.algorithm as TotpParams['algorithm'],
    };
  }
  // Validates the base32 alphabet now rather than on the first registration.
  let base32: string;
  try {
    base32 = Secret.fromBase32(secret.replace(/\s+/g, '').toUpperCase()).base32;
  } catch {
    // No cause: otpauth's message quotes a character of the secret.
    throw invalidOption('secret', 'not a base32 TOTP secret (letters A–Z, digits 2–7) nor an otpauth:// URI');
  }
  return { secret: base32, ...TOTP_DEFAULTS };
}

/** A socket parked at a relay, waiting for a rendezvous. */
interface Parked {
  relay: string;
  /** Ends this park so the slot parks again at once (to tell the relay a new target state). */
  recycle: () => void;
}

/** A rendezvous in progress: what its end record needs. */
interface Session {
  startedAt: number;
  rid?: string;
  relay: string;
  /** The socket's byte counters when it was handed over (the park's own bytes are not the rendezvous's). */
  readBase: number;
  writeBase: number;
  end?: AgentRendezvousEnd;
  /** What ended it, when it was not a clean close. */
  reason?: string;
}

/** Park records logged per minute at most (a pool of 1,000 parking at once is one line per slot otherwise). */
const PARK_LOGS_PER_MINUTE = 20;
/**
 * Rendezvous records logged per minute at most: anyone who can look the uuid up can start
 * rendezvous, and each one would otherwise be a line on the hidden server's disk. The health line,
 * status() and the 'report' events still count every one; the next record logged says how many
 * were left out (`suppressed`).
 */
const RENDEZVOUS_LOGS_PER_MINUTE = 120;

/**
 * A hidden server. Events: `listening` (first park), `registered` ({host, port} or {relay}),
 * `parked` (pool slot), `connection` (a `net.Socket` per rendezvous), `reconnecting` (delay in
 * ms), `report` (an `AgentEvent`: each park and re-park, each rendezvous's end, the target going
 * down or up, each error — the same things it logs), `error` (a RendezvousError; fatal ones —
 * AUTH_FAILED, BAD_REQUEST — stop it; emitted only when someone listens, otherwise logged and
 * raised as a process warning), `close` (after `close()` or a fatal error, once live connections
 * have ended). `status()` is its health at any moment.
 */
export class HiddenServer extends EventEmitter {
  private readonly params: TotpParams;
  private readonly log: Log;
  private readonly backoff: { minMs: number; maxMs: number };
  private stopped = false;
  private triple: RendezvousTriple | undefined;
  private registering: Promise<RendezvousTriple> | undefined;
  private lastStep = -1;
  /** Steps whose codes were refused since the last accepted one. */
  private readonly refusedSteps = new Set<number>();
  /** A step whose code was refused while it was still ahead of the clock (-1: none). */
  private aheadRefused = -1;
  private readonly idle = new Map<Socket, Parked>();
  private readonly sleepers = new Set<() => void>();
  /** Aborted by `stop()`: ends pending API calls, relay connects and status reads at once. */
  private readonly stopper = new AbortController();

  private readonly live = new Map<Socket, Session>();
  private started = false;
  private closing = false;

  // What status() reports.
  private startedAt = Date.now();
  private served = 0;
  private failed = 0;
  private bytesToHidden = 0;
  private bytesToMobile = 0;
  private lastRendezvous: AgentStatus['lastRendezvous'];
  private lastError: AgentStatus['lastError'];
  private target: TargetState | undefined;
  /** Why each slot parks next (a slot's first park is `start`). */
  private readonly parkCause = new Map<number, { after: ParkCause; reason?: string }>();
  private readonly parkLogBudget = new LogBudget(PARK_LOGS_PER_MINUTE);
  private readonly rendezvousLogBudget = new LogBudget(RENDEZVOUS_LOGS_PER_MINUTE);

  constructor(private readonly opts: HiddenServerOptions) {
    super();
    checkHiddenServerOptions(opts);
    this.params = totpParamsFrom(opts.secret);
    this.log = opts.log ?? silentLog;
    this.backoff = opts.backoff ?? BACKOFF_DEFAULTS;
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
      served: this.served,
      live: this.live.size,
      failed: this.failed,
      bytesToHidden: this.bytesToHidden,
      bytesToMobile: this.bytesToMobile,
      target: this.target ?? 'unknown',
    };
    if (this.lastRendezvous) out.lastRendezvous = { ...this.lastRendezvous };
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
    const session = this.live.get(socket);
    if (session && !session.end) {
      session.end = end;
      session.reason = reason;
    }
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

  /** True between `listen()` and `close()`. */
  get listening(): boolean {
    return this.started && !this.stopped;
  }

  /** Live rendezvous connections, like `net.Server#getConnections`. */
  getConnections(cb: (err: Error | null, count: number) => void): void {
    cb(null, this.live.size);
  }

  /** Registers and starts parking; `cb` runs on the first park (`'listening'`). */
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

  private maybeClosed(): void {
    if (this.closing && this.live.size === 0) {
      this.closing = false;
      setImmediate(() => this.emit('close'));
    }
  }

  /** Starts registering and parking (`listen()` without a callback). */
  start(): this {
    if (this.started) return this;
    this.started = true;
    this.startedAt = Date.now();
    this.once('parked', () => this.emit('listening'));
    const http = this.opts.protocol === 'http';
    if (http && !this.opts.relay)
      throw new RendezvousError('BAD_REQUEST', 'the http protocol needs the relay URL');
    if (!http && !this.opts.api)
      throw new RendezvousError('BAD_REQUEST', 'the generic protocol needs the API URL');
    if (!http) apiUrlList(this.opts.api as ApiUrls); // a malformed list fails here, not on each retry
    for (let i = 0; i < (this.opts.pool ?? 1); i++) void (http ? this.parkLoopHttp(i) : this.parkLoop(i));
    return this;
  }

  /** Stops parking; live spliced connections are left to finish. */
  stop(): void {
    this.stopped = true;
    this.stopper.abort();
    for (const s of this.idle.keys()) s.destroy();
    for (const wake of this.sleepers) wake();
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

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(t);
        this.sleepers.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  private delay(attempt: number): number {
    const base = Math.min(this.backoff.maxMs, this.backoff.minMs * 2 ** attempt);
    return Math.round(base / 2 + (Math.random() * base) / 2);
  }

  /** How long to wait after a transient refusal: its Retry-After (capped) or the backoff. */
  private waitAfter(err: unknown, attempt: number): number {
    const retryAfter = isRendezvousError(err) ? err.retryAfter : undefined;
    if (retryAfter && retryAfter > 0) {
      // Jittered a little so agents told the same Retry-After do not return in one burst.
      return Math.min(MAX_RETRY_AFTER_MS, retryAfter * 1000) + Math.round(Math.random() * 250);
    }
    return this.delay(attempt);
  }

  private ensureRegistered(): Promise<RendezvousTriple> {
    if (this.triple) return Promise.resolve(this.triple);
    this.registering ??= this.register().finally(() => {
      this.registering = undefined;
    });
    return this.registering;
  }

  /**
   * The next usable code. A code is accepted once: after one was used or refused in this step,
   * take the next step's (inside the ±1 drift window) rather than waiting; past that, wait until
   * the window admits it. A code refused while its step was still ahead is sent once more when
   * that step is current: servers without a drift window (the original's) accept only that.
   */
  private async nextCode(): Promise<{ code: string; step: number; ahead: boolean }> {
    for (;;) {
      if (this.stopped) throw new RendezvousError('ABORTED', 'agent stopped');
      const now = Date.now();
      const nowStep = timeStep(this.params, now);
      const step = Math.max(nowStep, this.lastStep + 1);
      const stepMs = this.params.step * 1000;
      if (step === this.aheadRefused && step > nowStep) {
        await this.sleep(step * stepMs - now + 50);
        continue;
      }
      if (step <= nowStep + 1) return { code: codeForStep(this.params, step), step, ahead: step > nowStep };
      await this.sleep((step - 1) * stepMs - now + 50);
    }
  }

  /**
   * A code was refused (401, or the original's 200 "invalid request"). The same answer means a
   * replay — a previous process of this agent used the step's code moments ago — or a wrong
   * secret; only refusals on several later steps tell them apart. Returns true when it is time
   * to conclude the secret (or uuid) is wrong.
   */
  private codeRefused(sent: { step: number; ahead: boolean }): boolean {
    this.refusedSteps.add(sent.step);
    if (sent.ahead) {
      this.aheadRefused = sent.step;
      this.lastStep = Math.max(this.lastStep, sent.step - 1);
    } else this.lastStep = Math.max(this.lastStep, sent.step);
    const give = this.refusedSteps.size > (this.opts.authRetrySteps ?? AUTH_RETRY_STEPS);
    if (!give) this.log.warn('code refused (used already, or a wrong secret), trying the next step');
    return give;
  }

  /** A code was accepted: the refusals before it were replays, not a wrong secret. */
  private codeAccepted(step: number): void {
    this.lastStep = step;
    this.refusedSteps.clear();
    this.aheadRefused = -1;
  }

  private async register(): Promise<RendezvousTriple> {
    let attempt = 0;
    for (;;) {
      const sent = await this.nextCode();
      try {
        const triple = await registerWithApi(
          this.opts.api as ApiUrls,
          this.opts.uuid,
          sent.code,
          this.stopper.signal,
        );
        this.codeAccepted(sent.step);
        this.triple = triple;
        this.log.info('registered', { relay: `${triple.host}:${triple.port}` });
        this.emit('registered', { host: triple.host, port: triple.port });
        return triple;
      } catch (err) {
        if (this.stopped) throw new RendezvousError('ABORTED', 'agent stopped');
        if (isRendezvousError(err, 'AUTH_FAILED')) {
          if (this.codeRefused(sent)) throw err;
          continue;
        }
        if (isRendezvousError(err, 'BAD_REQUEST')) throw err;
        // 429, 503, unreachable, an answer that is not JSON: transient.
        const wait = this.waitAfter(err, attempt++);
        this.noteError('registration failed, retrying', (err as Error).message, { inMs: wait });
        this.emit('reconnecting', wait);
        await this.sleep(wait);
      }
    }
  }

  private async parkLoop(slot: number): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      let triple: RendezvousTriple;
      try {
        triple = await this.ensureRegistered();
      } catch (err) {
        if (!this.stopped) this.fail(err as RendezvousError);
        return;
      }
      let relaySocket: Socket;
      let rid: string | undefined;
      let parkedAt = 0;
      const relay = relayAddressOf(triple);
      // Set when this park is ended on purpose, to re-park with news of the target.
      let recycled = false;
      try {
        let parkedSocket: Socket | undefined;
        const paired = dialRelay(triple, {
          signal: this.stopper.signal,
          target: () => this.target,
          onConnected: (s) => {
            // Called right after the line was written: this.target is what it told the relay.
            const target = this.target;
            // close() may have come while this connection was being made.
            if (this.stopped) return void s.destroy();
            parkedSocket = s;
            parkedAt = Date.now();
            this.idle.set(s, {
              relay,
              recycle: () => {
                recycled = true;
                // With an error, so the wait for the status line ends at once.
                s.destroy(new Error('re-parking'));
              },
            });
            this.noteParked(slot, relay, target);
            this.emit('parked', slot);
          },
        });
        try {
          ({ socket: relaySocket, rid } = await paired);
        } finally {
          if (parkedSocket) this.idle.delete(parkedSocket);
        }
      } catch (err) {
        if (this.stopped) return;
        if (recycled) {
          this.parkCause.set(slot, { after: 'target_changed' });
          continue;
        }
        // A park that lived a while before it failed starts the backoff afresh.
        if (parkedAt && Date.now() - parkedAt > 10_000) attempt = 0;
        const wait = this.delay(attempt++);
        if (isRendezvousError(err, 'RELAY_REFUSED')) {
          // Any -ERR on a park (ours: unknown, expired or replaced cookie, draining relay; the
          // original's: "not registered", "invalid cookie") means this registration cannot be
          // parked on: register again, after the backoff so a refusing relay is not hammered.
          if (this.triple === triple) this.triple = undefined;
          this.parkCause.set(slot, { after: 'refusal', reason: err.message });
          this.noteError('relay refused the park, registering again', err.message, { relay, inMs: wait });
        } else {
          this.parkCause.set(slot, { after: 'failure', reason: (err as Error).message });
          this.noteError('relay connection failed, retrying', (err as Error).message, { relay, inMs: wait });
        }
        this.emit('reconnecting', wait);
        await this.sleep(wait);
        continue;
      }
      attempt = 0;
      this.handOver(relaySocket, relay, rid);
    }
  }

  private httpCookie: string | undefined;
  private codeInFlight: Promise<void> | undefined;

  /** Opens a connection to the relay's HTTP-specific endpoint (TLS for https URLs). */
  private connectHttpRelay(): Promise<Socket> {
    const url = new URL(this.opts.relay as string);
    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
    const signal = this.stopper.signal;
    if (url.protocol !== 'https:')
      return connectTcp(url.hostname, port, { timeoutMs: CONNECT_TIMEOUT_MS, signal });
    return new Promise((resolve, reject) => {
      const s = tlsConnect({ host: url.hostname, port, servername: url.hostname });
      const onAbort = () => {
        s.destroy();
        reject(new RendezvousError('ABORTED', 'aborted'));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      s.once('secureConnect', () => {
        signal.removeEventListener('abort', onAbort);
        resolve(s as unknown as Socket);
      });
      s.on('error', (err) => {
        signal.removeEventListener('abort', onAbort);
        s.destroy();
        reject(new RendezvousError('UNREACHABLE', `relay unreachable: ${err.message}`, { permanent: false }));
      });
    });
  }

  /**
   * One parked CONNECT at a time until a cookie is known (codes are single-use), then the cookie
   * for every re-park and every pool slot.
   */
  private async parkLoopHttp(slot: number): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      while (!this.httpCookie && this.codeInFlight) await this.codeInFlight;
      if (this.stopped) return;
      let release: (() => void) | undefined;
      let cred: string;
      let sent: { step: number; ahead: boolean } | undefined;
      if (this.httpCookie) {
        cred = `cookie=${encodeURIComponent(this.httpCookie)}`;
      } else {
        this.codeInFlight = new Promise((r) => {
          release = () => {
            this.codeInFlight = undefined;
            r();
          };
        });
        try {
          const next = await this.nextCode();
          sent = next;
          cred = `response=${next.code}`;
        } catch {
          release?.();
          return; // stopped
        }
      }
      let socket: Socket | undefined;
      let head: ResponseHead;
      const relay = new URL(this.opts.relay as string).host;
      let target: TargetState | undefined;
      let recycled = false;
      try {
        socket = await this.connectHttpRelay();
        if (this.stopped) {
          socket.destroy();
          release?.();
          return;
        }
        const s = socket;
        this.idle.set(s, {
          relay,
          recycle: () => {
            recycled = true;
            s.destroy();
          },
        });
        // Rendezvous-Target: what the relay shows operators about this agent's target.
        target = this.target;
        socket.write(
          `CONNECT uuid:${encodeURIComponent(this.opts.uuid)}?${cred} HTTP/1.1\r\nHost: ${relay}\r\n` +
            `${target ? `Rendezvous-Target: ${target}\r\n` : ''}\r\n`,
        );
        const decoder = new HeadDecoder();
        head = await readPreamble(
          socket,
          (chunk) => {
            const d = decoder.push(chunk);
            return d && { value: parseResponseHead(d.text), rest: d.rest };
          },
          { what: 'answer to CONNECT', timeoutMs: 30_000, signal: this.stopper.signal },
        );
      } catch (err) {
        if (socket) {
          this.idle.delete(socket);
          socket.destroy();
        }
        release?.();
        if (this.stopped) return;
        if (recycled) {
          this.parkCause.set(slot, { after: 'target_changed' });
          continue;
        }
        const wait = this.delay(attempt++);
        this.parkCause.set(slot, { after: 'failure', reason: (err as Error).message });
        this.noteError('relay connection failed, retrying', (err as Error).message, { relay, inMs: wait });
        this.emit('reconnecting', wait);
        await this.sleep(wait);
        continue;
      }
      if (head.status === 200) {
        if (sent) this.codeAccepted(sent.step);
        const cookie = head.headers.find(([k]) => k.toLowerCase() === 'rendezvous-cookie')?.[1];
        if (cookie) this.httpCookie = cookie;
        release?.();
        attempt = 0;
        if (!this.registeredOnce) {
          this.registeredOnce = true;
          this.log.info('registered', { relay: this.opts.relay });
          this.emit('registered', { relay: this.opts.relay });
        }
        this.noteParked(slot, relay, target);
        this.emit('parked', slot);
        const first = await this.waitForRendezvous(socket);
        this.idle.delete(socket);
        if (first) this.handOver(socket, relay, ridFromRequestHead(socket));
        else if (recycled) this.parkCause.set(slot, { after: 'target_changed' });
        else if (!this.stopped) {
          this.parkCause.set(slot, { after: 'failure', reason: 'parked connection closed by the relay' });
          await this.sleep(this.delay(0));
        }
        continue;
      }
      this.idle.delete(socket);
      socket.destroy();
      if (head.status === 401 && !cred.startsWith('response=')) {
        this.httpCookie = undefined; // expired or revoked: authenticate with a code again
        this.parkCause.set(slot, { after: 'refusal', reason: 'cookie refused (401)' });
        continue;
      }
      release?.();
      if (head.status === 401 && sent && !this.codeRefused(sent)) continue;
      if (head.status === 401 || head.status === 403 || head.status === 400) {
        this.fail(
          head.status === 401
            ? new RendezvousError('AUTH_FAILED', 'authentication failed')
            : new RendezvousError('BAD_REQUEST', `relay refused CONNECT (${head.status})`),
        );
        return;
      }
      if (sent) this.lastStep = Math.max(this.lastStep, sent.step);
      // 429, 503 (Retry-After), 408, 409, 5xx: transient.
      const retryAfter = Number(head.headers.find(([k]) => k.toLowerCase() === 'retry-after')?.[1]);
      const wait = this.waitAfter(
        new RendezvousError('UNREACHABLE', 'refused', {
          retryAfter: retryAfter > 0 ? retryAfter : undefined,
        }),
        attempt++,
      );
      this.parkCause.set(slot, { after: 'refusal', reason: `CONNECT refused (${head.status})` });
      this.noteError('CONNECT refused, retrying', `CONNECT refused (${head.status})`, {
        relay,
        status: head.status,
        inMs: wait,
      });
      this.emit('reconnecting', wait);
      await this.sleep(wait);
    }
  }

  private registeredOnce = false;

  /** Resolves true when the first bytes of a rendezvous arrive (left unread), false on close. */
  private waitForRendezvous(socket: Socket): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (v: boolean) => {
        socket.off('readable', onReadable);
        socket.off('close', onClose);
        socket.off('end', onClose);
        socket.off('error', onClose);
        resolve(v);
      };
      const onReadable = () => {
        if (socket.readableLength > 0) done(true);
        // At EOF 'readable' fires with nothing buffered; read(0) lets 'end' be emitted.
        else socket.read(0);
      };
      // A reset while parked is as good as a close: park again.
      const onClose = () => {
        socket.destroy();
        done(false);
      };
      socket.on('readable', onReadable);
      socket.on('close', onClose);
      socket.on('end', onClose);
      socket.on('error', onClose);
    });
  }

  /** One rendezvous ended: count it, log its record (event `rendezvous`), report it. */
  private rendezvousEnded(socket: Socket, session: Session): void {
    const end = session.end ?? 'closed';
    const bytesToHidden = Math.max(0, socket.bytesRead - session.readBase);
    const bytesToMobile = Math.max(0, socket.bytesWritten - session.writeBase);
    const durationMs = Date.now() - session.startedAt;
    this.bytesToHidden += bytesToHidden;
    this.bytesToMobile += bytesToMobile;
    if (end !== 'closed') this.failed++;
    this.lastRendezvous = { at: new Date().toISOString(), end, rid: session.rid };
    if (!session.rid) delete this.lastRendezvous.rid;
    const record = {
      rid: session.rid,
      protocol: this.protocol,
      relay: session.relay,
      bytesToHidden,
      bytesToMobile,
      durationMs,
      end,
      reason: session.reason,
    };
    const budget = this.rendezvousLogBudget.take('rendezvous');
    if (budget.ok)
      (end === 'closed' || end === 'mobile_reset' ? this.log.info : this.log.warn)('rendezvous ended', {
        event: 'rendezvous',
        uuid: this.opts.uuid,
        ...record,
        suppressed: budget.suppressed || undefined,
      });
    const e: AgentEvent = { event: 'rendezvous', ...record };
    if (!session.rid) delete e.rid;
    if (!session.reason) delete e.reason;
    this.report(e);
  }

  /** A rendezvous: hand the socket to the application; its end is recorded when it closes. */
  private handOver(socket: Socket, relay: string, rid: string | undefined): void {
    // The bytes the park itself read (the status line or CONNECT answer) are not the
    // rendezvous's; bytes already buffered (the early data, the request head) are.
    const session: Session = {
      startedAt: Date.now(),
      rid,
      relay,
      readBase: socket.bytesRead - socket.readableLength,
      writeBase: socket.bytesWritten,
    };
    this.live.set(socket, session);
    this.served++;
    // A mobile client that resets must not take the process down with an unhandled 'error':
    // this listener stays for the socket's life (the application may add its own; the error
    // also shows as 'close' with hadError).
    socket.on('error', (err) => {
      if (session.end) return;
      session.end = 'mobile_reset';
      session.reason = err.message;
    });
    socket.once('close', () => {
      this.live.delete(socket);
      this.rendezvousEnded(socket, session);
      this.maybeClosed();
    });
    if (this.listenerCount('connection') === 0) {
      // Nobody to serve it: end it rather than leave the mobile client hanging.
      socket.destroy();
      return;
    }
    this.emit('connection', socket);
  }
}

/** The `Rendezvous-Id` the relay put in the request head it forwarded, if the head's first bytes (already buffered) carry it. */
function ridFromRequestHead(socket: Socket): string | undefined {
  // A peek: read what is buffered and put it back untouched; nothing waits for more bytes.
  const chunk = socket.read() as Buffer | null;
  if (!chunk) return undefined;
  socket.unshift(chunk);
  const end = chunk.indexOf('\r\n\r\n');
  const head = chunk.subarray(0, end === -1 ? Math.min(chunk.length, 8192) : end).toString('latin1');
  const m = /\r\nrendezvous-id:[ \t]*([A-Za-z0-9_-]{1,32})[ \t]*(?:\r\n|$)/i.exec(head);
  return m?.[1];
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

/** What an HTTP-specific mobile client reads when the hidden server's target is down. */
const TARGET_DOWN_BODY = JSON.stringify({
  error: { permanent: false, diagnostic: "the hidden server's target is unreachable" },
});

/**
 * Tells the mobile side that the target refused. HTTP: a `502` with the error JSON. Generic:
 * a reset (RST) before any byte, which the relay passes on as a reset, so `rendezvous connect`
 * can say that the far end failed rather than that it ended normally.
 */
function refuseTargetDown(relaySocket: Socket, http: boolean): void {
  if (!http) {
    if (!relaySocket.destroyed) relaySocket.resetAndDestroy();
    return;
  }
  relaySocket.resume(); // the request is not going anywhere; let it drain
  relaySocket.end(
    'HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncache-control: no-store\r\n' +
      `content-length: ${Buffer.byteLength(TARGET_DOWN_BODY)}\r\nconnection: close\r\n\r\n${TARGET_DOWN_BODY}`,
  );
  // Bounded: a mobile client that never closes its side does not hold the socket forever.
  relaySocket.setTimeout(10_000, () => relaySocket.destroy());
}

/**
 * A hidden server that splices every rendezvous to `opts.target` — the CLI's `expose`. It knows
 * whether the target is reachable from each connect, and from a TCP probe at start and every
 * `probeEveryMs` while idle; each park tells the relay (`target=`, `Rendezvous-Target`).
 */
export function exposeHiddenServer(opts: ExposeOptions): HiddenServer {
  checkHiddenServerOptions(opts, true);
  const target = `${opts.target.host}:${opts.target.port}`;
  const http = opts.protocol === 'http';
  let lastReached = 0;
  const server = createHiddenServer(opts, (relaySocket) => {
    const local = connect({ ...opts.target, allowHalfOpen: true });
    local.setNoDelay(true);
    const onError = (err: Error) => {
      // Logged as the rendezvous's end (target_unreachable) and, on a change, as `target down`.
      server.noteRendezvousEnd(relaySocket, 'target_unreachable', err.message);
      // The last success no longer vouches for the target: the next probe runs, so a target
      // that comes back is seen within one period, not two.
      lastReached = 0;
      server.noteTarget('down', { target, reason: err.message });
      local.destroy();
      refuseTargetDown(relaySocket, http);
    };
    local.once('error', onError);
    local.once('connect', () => {
      local.off('error', onError);
      lastReached = Date.now();
      server.noteTarget('up', { target });
      // Registered before splice's own listener, so the record says which side aborted.
      local.once('error', (err) => server.noteRendezvousEnd(relaySocket, 'target_reset', err.message));
      splice(relaySocket, local);
    });
  });
  const every = opts.probeEveryMs ?? PROBE_EVERY_MS;
  let timer: NodeJS.Timeout | undefined;
  const probe = async () => {
    const r = await probeTarget(opts.target);
    // A rendezvous that connected meanwhile knows better than this probe.
    if (Date.now() - lastReached > every || r.state === 'down')
      server.noteTarget(r.state, { target, reason: r.reason });
  };
  if (every > 0) {
    timer = setInterval(() => {
      const idle = server.status().live === 0;
      if (server.listening && idle && Date.now() - lastReached >= every) void probe();
    }, every);
    timer.unref();
    server.once('close', () => clearInterval(timer));
  }
  // The first park waits for the first probe (bounded by its timeout), so it already carries
  // the target's state; a close() meanwhile is honoured (start() then parks nothing).
  if (every > 0) void probe().finally(() => server.listen());
  else server.listen();
  return server;
}
