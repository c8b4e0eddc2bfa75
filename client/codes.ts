/**
 * The agent's credentials: the one-time proof it sends to servers that know proofs (our
 * registration API and relay: no guess budget is spent on it, and a refusal is a verdict at
 * once), or the TOTP code for servers that do not (the original node-rendezvous, older
 * deployments) — which step's to send next (each is accepted once), and what a refusal means.
 */
import { Secret, URI } from 'otpauth';
import { RendezvousError } from '../core/errors.js';
import type { Log } from '../core/log.js';
import {
  codeForStep,
  compatCodeForStep,
  ORIGINAL_COMPAT,
  proofForStep,
  TOTP_DEFAULTS,
  type TotpParams,
  timeStep,
} from '../core/totp.js';
import type { Refusal } from './answers.js';
import { invalidOption } from './options.js';

/**
 * Distinct steps beyond the first whose short codes are tried before giving up (codes only: a
 * refused code may be a replay of what a previous process of this agent sent in the same step,
 * and only refusals on later steps tell). Proofs need no such wait: see `OneTimeCodes.refused`.
 */
export const AUTH_RETRY_STEPS = 3;

/** How the agent authenticates: `auto` (a proof, falling back to codes for this session when the server does not know proofs), `proof`, `code`. */
export type AuthMode = 'auto' | 'proof' | 'code';

/**
 * How codes are computed: `rfc` (RFC 6238) or `speakeasy` (the original's library: the HMAC key
 * is the UTF-8 encoding of the decoded secret bytes, which differs for binary secrets).
 */
export type CodeEncoding = 'rfc' | 'speakeasy';

/**
 * What a secret says about its codes: the TOTP parameters, and for the original's identities the
 * code rule (an otpauth URI with `digits` above 10 — node-rendezvous wrote 40 — sends the whole
 * truncation value; `encoding=speakeasy` selects speakeasy's key).
 */
export interface SecretSettings {
  params: TotpParams;
  /** `original`: the whole decimal truncation value, unpadded; a number: its last n digits, unpadded. */
  digits?: 'original' | number;
  encoding?: CodeEncoding;
}

/** Turns a base32 secret or an otpauth URI into TOTP parameters. */
export function totpParamsFrom(secret: string): TotpParams {
  return secretSettingsFrom(secret).params;
}

/** Turns a base32 secret or an otpauth URI into TOTP parameters and, from a URI, the original's code rule. */
export function secretSettingsFrom(secret: string): SecretSettings {
  if (secret.startsWith('otpauth://')) {
    let otp: ReturnType<typeof URI.parse>;
    try {
      otp = URI.parse(secret);
    } catch {
      // otpauth's own message may quote the URI, secret included: never pass it on, not even as a cause.
      throw invalidOption('secret', 'not a valid otpauth:// URI');
    }
    if (!('period' in otp)) throw new RendezvousError('BAD_REQUEST', 'otpauth URI is not TOTP');
    // `encoding` is this project's own parameter (authenticator apps ignore unknown ones).
    const encoding = /[?&]encoding=speakeasy(&|$)/i.test(secret) ? ('speakeasy' as const) : undefined;
    const params = {
      secret: otp.secret.base32,
      // node-rendezvous wrote digits=40: the whole truncation value (1–10 digits), unpadded.
      digits: Math.min(otp.digits, 10),
      step: otp.period,
      algorithm: otp.algorithm as TotpParams['algorithm'],
    };
    return { params, digits: otp.digits > 10 ? 'original' : undefined, encoding };
  }
  // Validates the base32 alphabet now rather than on the first registration.
  let base32: string;
  try {
    base32 = Secret.fromBase32(secret.replace(/\s+/g, '').toUpperCase()).base32;
  } catch {
    // No cause: otpauth's message quotes a character of the secret.
    throw invalidOption('secret', 'not a base32 TOTP secret (letters A–Z, digits 2–7) nor an otpauth:// URI');
  }
  return { params: { secret: base32, ...TOTP_DEFAULTS } };
}

/** A credential handed out by `OneTimeCodes.next()`: its step, its kind, whether that step was still ahead of the clock. */
export interface SentCode {
  code: string;
  step: number;
  ahead: boolean;
  kind: 'proof' | 'code';
  /** The code of a step accepted before, sent again (servers that allow it: the original). */
  reuse?: boolean;
}

/** What the bookkeeping needs from the agent: how to wait, whether it stopped, where to log. */
export interface CodeClock {
  sleep: (ms: number) => Promise<void>;
  stopped: () => boolean;
  log: Log;
  /** Refused codes tolerated on later steps before the secret is taken for wrong. */
  authRetrySteps?: number;
}

/** How this agent's credentials are made. */
export interface CodeSettings extends SecretSettings {
  uuid: string;
  auth?: AuthMode;
}

/** The verdict for refused credentials on a server that can tell no more (by design). */
export const wrongSecretOrUuid = () =>
  new RendezvousError('AUTH_FAILED', 'authentication failed: wrong secret or unknown uuid', {
    permanent: true,
  });

/**
 * One agent's credentials: never the same step twice (unless the server allows reuse), proofs
 * until the server shows it does not know them, and what each refusal means.
 */
export class OneTimeCodes {
  private lastStep = -1;
  /** Steps whose codes were refused since the last accepted one. */
  private readonly refusedSteps = new Set<number>();
  /** Steps whose proofs were refused (two distinct ones are a verdict). */
  private readonly refusedProofs = new Set<number>();
  /** A step whose code was refused while it was still ahead of the clock (-1: none). */
  private aheadRefused = -1;
  /** The last step whose credential was accepted (-1: none). */
  private acceptedStep = -1;
  private mode: AuthMode;
  /** The server checks the current step only (the original): never send a code ahead of it. */
  private noWindow = false;
  /** The server takes an accepted code again within its step (the original's HTTP relay). */
  private reusable = false;
  /**
   * Two proofs were refused as our servers refuse a wrong secret: one short code of the current
   * step tells an older relay that refuses proofs the same way (it accepts the code) from a
   * wrong secret (refused: the verdict).
   */
  private probing = false;
  /** A replay was reported, which a server tells only to a right credential: the secret is right. */
  private secretProven = false;

  constructor(
    private readonly settings: CodeSettings,
    private readonly clock: CodeClock,
  ) {
    this.mode = settings.auth ?? 'auto';
  }

  private get params(): TotpParams {
    return this.settings.params;
  }

  /** The kind of credential sent now. */
  get kind(): 'proof' | 'code' {
    return this.mode === 'code' ? 'code' : 'proof';
  }

  /** The credential of `step`, of the current kind. */
  private credential(step: number): string {
    const { params, uuid, digits, encoding } = this.settings;
    if (this.kind === 'proof') return proofForStep(params, uuid, step);
    if (digits === undefined && encoding !== 'speakeasy') return codeForStep(params, step);
    return compatCodeForStep(
      params,
      {
        ...ORIGINAL_COMPAT,
        digits: digits ?? params.digits,
        encoding: encoding === 'speakeasy' ? 'speakeasy' : 'rfc6238',
      },
      step,
    );
  }

  /** The server takes an accepted code again within its step: re-parks send the current one. */
  allowReuse(): void {
    this.reusable = true;
  }

  /**
   * The next usable credential. One is accepted once: after one was used or refused in this
   * step, take the next step's (inside the ±1 drift window) rather than waiting; past that, or
   * against a server without a window, wait until it is current. A code refused while its step
   * was still ahead is sent once more when that step is current. Where the server allows reuse,
   * the current step's accepted code is sent again. Rejects with ABORTED once the agent stopped.
   */
  async next(): Promise<SentCode> {
    for (;;) {
      if (this.clock.stopped()) throw new RendezvousError('ABORTED', 'agent stopped');
      const now = Date.now();
      const nowStep = timeStep(this.params, now);
      const kind = this.kind;
      if (this.reusable && kind === 'code' && this.acceptedStep === nowStep)
        return { code: this.credential(nowStep), step: nowStep, ahead: false, kind, reuse: true };
      // Proofs of this step were refused, not claimed: its code is unspent.
      if (this.probing) return { code: this.credential(nowStep), step: nowStep, ahead: false, kind };
      const step = Math.max(nowStep, this.lastStep + 1);
      const stepMs = this.params.step * 1000;
      if ((step === this.aheadRefused || this.noWindow) && step > nowStep) {
        await this.clock.sleep(step * stepMs - now + 50);
        continue;
      }
      if (step <= nowStep + 1) return { code: this.credential(step), step, ahead: step > nowStep, kind };
      await this.clock.sleep((step - 1) * stepMs - now + 50);
    }
  }

  /**
   * A credential was refused (`refusal`, see client/answers.ts). Returns the verdict when there
   * is one, else undefined (send `next()`):
   * - `disabled`, `length`: told only to a right secret, so verdicts at once;
   * - `replay` ("code used already"): no verdict, the next step's;
   * - a proof refused as `malformed` or in the original's manner: the server does not know
   *   proofs — short codes for the rest of this session (with `auth: 'proof'`, a verdict);
   * - a proof refused as `auth`: proofs cannot be guessed nor are they replayed by this agent,
   *   so a second refusal, on the next step, is the verdict: wrong secret or unknown uuid — with
   *   `auto`, once one short code is refused as well (an older relay refuses proofs that way);
   * - a code refused: a replay or a wrong secret — only refusals on several later steps tell.
   */
  refused(sent: SentCode, refusal: Refusal): RendezvousError | undefined {
    const log = this.clock.log;
    switch (refusal) {
      case 'disabled':
        return new RendezvousError(
          'IDENTITY_DISABLED',
          'identity disabled (an operator can enable it again)',
          {
            permanent: true,
          },
        );
      case 'length':
        return new RendezvousError(
          'CODE_LENGTH_REFUSED',
          'code length not accepted for this identity (send a length it accepts: --code-digits)',
          { permanent: true },
        );
      case 'replay':
        this.secretProven = true;
        this.lastStep = Math.max(this.lastStep, sent.step);
        if (sent.reuse) this.acceptedStep = -1;
        log.info("code used already, sending the next step's", { event: 'auth' });
        return undefined;
      case 'malformed':
      case 'nack':
        if (sent.kind === 'proof') {
          if (this.mode === 'proof')
            return new RendezvousError(
              'BAD_REQUEST',
              'the server does not accept one-time proofs (an original or older server): use --auth code',
            );
          this.mode = 'code';
          if (refusal === 'nack') this.noWindow = true;
          log.warn(
            'the server does not know one-time proofs: authenticating with short codes for this session',
            {
              event: 'auth',
            },
          );
          return undefined; // the step was not spent: its code next
        }
        if (refusal === 'malformed')
          return new RendezvousError(
            'BAD_REQUEST',
            'the server refused the code as malformed (--code-digits?)',
          );
        this.noWindow = true; // the original: the current step only
        return this.codeRefused(sent);
      case 'auth':
        if (sent.kind === 'proof' && this.secretProven && sent.ahead) {
          // The secret is right, so the server has no drift window (an imported identity's):
          // send that step's proof again once it is current.
          this.noWindow = true;
          this.lastStep = Math.max(this.lastStep, sent.step - 1);
          return undefined;
        }
        if (sent.kind === 'proof') {
          this.refusedProofs.add(sent.step);
          this.lastStep = Math.max(this.lastStep, sent.step);
          if (this.refusedProofs.size < 2) return undefined;
          if (this.mode !== 'auto') return wrongSecretOrUuid();
          this.mode = 'code';
          this.probing = true;
          return undefined;
        }
        if (this.probing) {
          this.probing = false;
          return wrongSecretOrUuid();
        }
        return this.codeRefused(sent);
    }
  }

  /** A short code was refused: a reused one means the step is over for reuse; otherwise counted. */
  private codeRefused(sent: SentCode): RendezvousError | undefined {
    if (sent.reuse) {
      this.acceptedStep = -1;
      this.lastStep = Math.max(this.lastStep, sent.step);
      return undefined;
    }
    this.refusedSteps.add(sent.step);
    if (sent.ahead) {
      this.aheadRefused = sent.step;
      this.lastStep = Math.max(this.lastStep, sent.step - 1);
    } else this.lastStep = Math.max(this.lastStep, sent.step);
    if (this.refusedSteps.size > (this.clock.authRetrySteps ?? AUTH_RETRY_STEPS)) return wrongSecretOrUuid();
    this.clock.log.warn("code refused, trying the next step's (a code is accepted once)", { event: 'auth' });
    return undefined;
  }

  /** A credential was accepted: the refusals before it were replays, not a wrong secret. */
  accepted(step: number): void {
    if (this.probing) {
      this.probing = false;
      this.clock.log.warn(
        'the server does not know one-time proofs: authenticating with short codes for this session',
        {
          event: 'auth',
        },
      );
    }
    this.lastStep = Math.max(this.lastStep, step);
    this.acceptedStep = step;
    this.refusedSteps.clear();
    this.refusedProofs.clear();
    this.aheadRefused = -1;
  }

  /** A credential was spent without an answer about it (refused for another reason): never send it again. */
  spent(step: number): void {
    this.lastStep = Math.max(this.lastStep, step);
  }
}
