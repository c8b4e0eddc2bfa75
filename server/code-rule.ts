/**
 * The code rule's answers: which code lengths a compat identity accepts (its shortest, and while
 * its uuid is under attack only the lengths its clients have used), the answers the original gave
 * its clients for refusals, and the answer to a proof used twice. docs/security.md gives the
 * reasoning ("Code lengths and proofs").
 */
import { codeLengthRefused, RendezvousError } from '../core/errors.js';
import { shortestCodeOf } from '../core/totp.js';
import type { CodeLength, Identity } from './store/index.js';

/**
 * An answer the code rule decided, with its own `permanent` (the edges otherwise derive it from
 * the status). `original`: a refusal of a compat identity's code, which the registration API
 * answers as the original did (`200 {"error":{"permanent":false,"diagnostic":"invalid request"}}`)
 * and the relay with the original's status and `permanent:false`.
 */
export class CodeAnswer extends RendezvousError {
  readonly original: boolean;

  constructor(from: RendezvousError, opts: { original?: boolean; permanent?: boolean } = {}) {
    super(from.code, from.message, {
      permanent: opts.permanent ?? (opts.original ? false : from.permanent),
      retryAfter: from.retryAfter,
      cause: from,
    });
    this.original = opts.original ?? false;
  }
}

/** The body the original's registrar answered every refused code with (status 200). */
export const ORIGINAL_REFUSAL_BODY = { error: { permanent: false, diagnostic: 'invalid request' } } as const;

/** True for an error the registration API answers the original's way. */
export const isOriginalRefusal = (err: unknown): err is CodeAnswer =>
  err instanceof CodeAnswer && err.original;

/**
 * The `permanent` an edge puts on the wire for `err` when the code rule decided it, else
 * undefined (the edge's own rule applies).
 */
export const ownPermanence = (err: unknown): boolean | undefined =>
  err instanceof CodeAnswer ? err.permanent : undefined;

/**
 * A refusal of a code (wrong, malformed, replayed) for a compat identity, answered the original's
 * way; any other error, or any identity that is not compat, as is.
 */
export function asOriginal(identity: Identity | undefined, err: unknown): unknown {
  if (!identity?.compat || !(err instanceof RendezvousError) || err instanceof CodeAnswer) return err;
  return err.code === 'AUTH_FAILED' || err.code === 'BAD_REQUEST'
    ? new CodeAnswer(err, { original: true })
    : err;
}

/**
 * A right proof whose step is already claimed (sent twice, or a lost answer retried): said only
 * to the holder of a right proof, so it tells a stranger nothing. Not permanent: the next step's
 * proof is accepted.
 */
export const proofUsed = () =>
  new CodeAnswer(new RendezvousError('AUTH_FAILED', 'proof already used for this step'), {
    permanent: false,
  });

/**
 * Why a compat identity refuses a right code's length, or undefined when it accepts it. Shorter
 * than the identity's shortest: permanent (its settings). Under attack, a suffix shorter than the
 * shortest one its clients used (or any suffix, when they only sent the whole value): temporary,
 * for `retryAfter` seconds. The whole value is always accepted: guessing it is a 1 in 2³¹ shot.
 */
export function lengthRefusal(
  identity: Identity,
  kind: CodeLength,
  attack: { underAttack: boolean; retryAfter: number },
): RendezvousError | undefined {
  if (!identity.compat || kind === 'full') return undefined;
  if (kind < shortestCodeOf(identity.compat)) return new CodeAnswer(codeLengthRefused());
  const used = identity.codeLengths ?? [];
  if (!attack.underAttack || used.length === 0) return undefined;
  const suffixes = used.filter((k): k is number => k !== 'full');
  if (suffixes.length > 0 && kind >= Math.min(...suffixes)) return undefined;
  return new CodeAnswer(
    new RendezvousError('CODE_LENGTH_REFUSED', codeLengthRefused().message, {
      retryAfter: Math.max(1, attack.retryAfter),
    }),
    { permanent: false },
  );
}

/** The identity's code lengths with `kind` added, or undefined when it is already there (nothing to write). */
export function withLength(identity: Identity, kind: CodeLength): CodeLength[] | undefined {
  if (!identity.compat) return undefined;
  const used = identity.codeLengths ?? [];
  return used.includes(kind) ? undefined : [...used, kind];
}
