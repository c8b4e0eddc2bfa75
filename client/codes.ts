/**
 * The agent's one-time codes: the TOTP parameters from its secret, which step's code to send
 * next (each is accepted once), and when refusals mean a wrong secret rather than replays.
 */
import { Secret, URI } from 'otpauth';
import { RendezvousError } from '../core/errors.js';
import type { Log } from '../core/log.js';
import { codeForStep, TOTP_DEFAULTS, type TotpParams, timeStep } from '../core/totp.js';
import { invalidOption } from './options.js';

/**
 * Distinct steps beyond the first whose codes are tried before giving up: the current step,
 * then three more (each taken as soon as the ±1 drift window admits it, and a refused early
 * one again once it is current), so a wrong secret is concluded at the second step boundary
 * after the first refusal (30–60 s at 30 s steps), never earlier.
 */
export const AUTH_RETRY_STEPS = 3;

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

/** A code handed out by `OneTimeCodes.next()`: its step, and whether that step was still ahead of the clock. */
export interface SentCode {
  code: string;
  step: number;
  ahead: boolean;
}

/** What the bookkeeping needs from the agent: how to wait, whether it stopped, where to log. */
export interface CodeClock {
  sleep: (ms: number) => Promise<void>;
  stopped: () => boolean;
  log: Log;
  /** Refused codes tolerated on later steps before the secret is taken for wrong. */
  authRetrySteps?: number;
}

/** One agent's codes: never the same step twice, and the count of refused steps since the last accepted one. */
export class OneTimeCodes {
  private lastStep = -1;
  /** Steps whose codes were refused since the last accepted one. */
  private readonly refusedSteps = new Set<number>();
  /** A step whose code was refused while it was still ahead of the clock (-1: none). */
  private aheadRefused = -1;

  constructor(
    private readonly params: TotpParams,
    private readonly clock: CodeClock,
  ) {}

  /**
   * The next usable code. A code is accepted once: after one was used or refused in this step,
   * take the next step's (inside the ±1 drift window) rather than waiting; past that, wait until
   * the window admits it. A code refused while its step was still ahead is sent once more when
   * that step is current: servers without a drift window (the original's) accept only that.
   * Rejects with ABORTED once the agent stopped.
   */
  async next(): Promise<SentCode> {
    for (;;) {
      if (this.clock.stopped()) throw new RendezvousError('ABORTED', 'agent stopped');
      const now = Date.now();
      const nowStep = timeStep(this.params, now);
      const step = Math.max(nowStep, this.lastStep + 1);
      const stepMs = this.params.step * 1000;
      if (step === this.aheadRefused && step > nowStep) {
        await this.clock.sleep(step * stepMs - now + 50);
        continue;
      }
      if (step <= nowStep + 1) return { code: codeForStep(this.params, step), step, ahead: step > nowStep };
      await this.clock.sleep((step - 1) * stepMs - now + 50);
    }
  }

  /**
   * A code was refused (401, or the original's 200 "invalid request"). The same answer means a
   * replay — a previous process of this agent used the step's code moments ago — or a wrong
   * secret; only refusals on several later steps tell them apart. Returns true when it is time
   * to conclude the secret (or uuid) is wrong.
   */
  refused(sent: { step: number; ahead: boolean }): boolean {
    this.refusedSteps.add(sent.step);
    if (sent.ahead) {
      this.aheadRefused = sent.step;
      this.lastStep = Math.max(this.lastStep, sent.step - 1);
    } else this.lastStep = Math.max(this.lastStep, sent.step);
    const give = this.refusedSteps.size > (this.clock.authRetrySteps ?? AUTH_RETRY_STEPS);
    if (!give) this.clock.log.warn('code refused (used already, or a wrong secret), trying the next step');
    return give;
  }

  /** A code was accepted: the refusals before it were replays, not a wrong secret. */
  accepted(step: number): void {
    this.lastStep = step;
    this.refusedSteps.clear();
    this.aheadRefused = -1;
  }

  /** A code was spent without an answer about it (the request was refused for another reason): never send it again. */
  spent(step: number): void {
    this.lastStep = Math.max(this.lastStep, step);
  }
}
