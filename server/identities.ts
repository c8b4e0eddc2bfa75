/**
 * Identities as the operator manages them: provisioning (a fresh or an existing TOTP secret),
 * rotating the secret, disabling, unlocking, deleting, usage limits, and the compatibility settings of
 * identities imported from node-rendezvous. The console, the CLI (`rendezvous identities`) and the
 * importer call in here; the store keeps them.
 */
import { randomUUID } from 'node:crypto';
import { badRequest, RendezvousError } from '../core/errors.js';
import {
  base32Decode,
  isAsciiSecret,
  newAsciiTotpSecret,
  newTotpSecret,
  ORIGINAL_COMPAT,
  otpauthUri,
  TOTP_DEFAULTS,
  type TotpCompat,
  type TotpParams,
} from '../core/totp.js';
import { isUuid } from '../core/uuid.js';
import type { Store } from './store/index.js';
import type { IdentityLimits } from './usage-types.js';

export { isUuid, UUID_RULE } from '../core/uuid.js';

/** Validates a hidden-server uuid parameter (printable, bounded, no separators that matter). */
export function checkUuid(uuid: string | undefined): string {
  if (uuid === undefined || uuid === '') throw badRequest('missing parameter: uuid');
  if (!isUuid(uuid)) throw badRequest('malformed parameter: uuid');
  return uuid;
}

/** What `provision` returns: shown once, then only the store has the secret. */
export interface ProvisionedIdentity extends TotpParams {
  uuid: string;
  otpauth: string;
  compat?: TotpCompat;
}

/** Fewest secret bytes an existing secret may have (80 bits, what authenticator apps use). */
export const MIN_SECRET_BYTES = 10;

/** Validates an existing base32 secret; returns it upper-cased, without padding or spaces. */
export function checkSecret(secret: string): string {
  let bytes: Buffer;
  try {
    bytes = base32Decode(secret);
  } catch {
    throw badRequest('the secret is not base32');
  }
  if (bytes.length < MIN_SECRET_BYTES)
    throw badRequest(`the secret is shorter than ${MIN_SECRET_BYTES} bytes`);
  return secret.replace(/[\s=]/g, '').toUpperCase();
}

/**
 * The compatibility settings for an existing secret used the original's way: speakeasy-style
 * codes when the secret is binary (its codes differ from RFC 6238), else plain RFC 6238 keys.
 */
export function originalCompatFor(secret: string, digits: 'original' | number = 'original'): TotpCompat {
  return { ...ORIGINAL_COMPAT, digits, encoding: isAsciiSecret(secret) ? 'rfc6238' : 'speakeasy' };
}

/**
 * Creates a hidden-server identity: a fresh TOTP secret, or `secret` (an existing one: never
 * from argv). With `compat`, codes are checked the original's way; a fresh compat secret is
 * ASCII (40 characters), as the original minted them.
 */
export async function provisionIdentity(
  store: Store,
  opts: {
    uuid?: string;
    label?: string;
    nowMs?: number;
    secret?: string;
    compat?: TotpCompat;
    /** Step and algorithm of an existing secret (default 30 s, SHA1). */
    params?: Partial<Pick<TotpParams, 'step' | 'algorithm'>>;
  } = {},
): Promise<ProvisionedIdentity> {
  const uuid = checkUuid(opts.uuid ?? randomUUID());
  if (opts.compat) checkCompat(opts.compat);
  const secret =
    opts.secret !== undefined
      ? checkSecret(opts.secret)
      : opts.compat
        ? newAsciiTotpSecret()
        : newTotpSecret();
  const params: TotpParams = {
    ...TOTP_DEFAULTS,
    ...opts.params,
    secret,
    // `digits` of a compat identity is only informative (its `compat.digits` decides).
    digits:
      opts.compat && typeof opts.compat.digits === 'number'
        ? opts.compat.digits
        : opts.compat
          ? 10
          : TOTP_DEFAULTS.digits,
  };
  await store.createIdentity({
    uuid,
    label: opts.label,
    createdAt: Math.floor((opts.nowMs ?? Date.now()) / 1000),
    ...params,
    ...(opts.compat ? { compat: opts.compat } : {}),
  });
  return {
    uuid,
    ...params,
    otpauth: otpauthUri(params, uuid),
    ...(opts.compat ? { compat: opts.compat } : {}),
  };
}

/**
 * Replaces an identity's TOTP secret; every registration, cookie and park made with the old one
 * ends (the store deletes the registration and cookie, relays drop parks at their next check).
 * The new secret is returned once. The operator console calls this; so should any other tool.
 */
export async function rotateIdentitySecret(store: Store, uuid: string): Promise<ProvisionedIdentity> {
  // A rotation makes the identity strict (an imported one loses its compatibility settings): the
  // new secret goes to an agent of this project, whose codes are RFC 6238 with 6 digits.
  const params: TotpParams = { secret: newTotpSecret(), ...TOTP_DEFAULTS };
  await store.rotateSecret(checkUuid(uuid), params);
  return { uuid, ...params, otpauth: otpauthUri(params, uuid) };
}

/**
 * Checks a compatibility setting's values (they come from an operator's command line or a record).
 * Throws BAD_REQUEST naming the field.
 */
export function checkCompat(c: TotpCompat): TotpCompat {
  if (c.digits !== 'original' && !(Number.isInteger(c.digits) && c.digits >= 6 && c.digits <= 10))
    throw badRequest('digits: original or 6–10');
  if (c.encoding !== 'rfc6238' && c.encoding !== 'speakeasy')
    throw badRequest('encoding: rfc6238 or speakeasy');
  if (c.window !== 0 && c.window !== 1) throw badRequest('window: 0 or 1');
  if (typeof c.reuseWithinStep !== 'boolean') throw badRequest('reuseWithinStep: true or false');
  if (
    c.cookieLifetime !== 'next-registration' &&
    !(Number.isInteger(c.cookieLifetime) && c.cookieLifetime >= 60 && c.cookieLifetime <= 366 * 86_400)
  )
    throw badRequest('cookie lifetime: next-registration or 60–31622400 seconds');
  return c;
}

/**
 * Sets an identity's compatibility settings, or makes it strict (undefined). Registrations stand;
 * the new rules apply from the next code checked (cookie lifetime: from the next registration).
 */
export async function setIdentityCompat(
  store: Store,
  uuid: string,
  compat: TotpCompat | undefined,
): Promise<void> {
  const digits = !compat ? TOTP_DEFAULTS.digits : compat.digits === 'original' ? 10 : compat.digits;
  await store.setCompat(checkUuid(uuid), compat ? checkCompat(compat) : undefined, digits);
}

/** Disables (ending its registration, cookie and parks, as a rotation does) or re-enables an identity. */
export async function setIdentityDisabled(store: Store, uuid: string, disabled: boolean): Promise<void> {
  await store.setDisabled(checkUuid(uuid), disabled);
}

/**
 * Sets an identity's usage limits (undefined or `{}`: none), replacing the ones it had. BAD_REQUEST
 * naming the field for a bad value (store/identities.ts `checkLimits`), NOT_FOUND for an unknown
 * uuid. A change notice is written first: every relay applies the limits within one
 * revalidation round.
 */
export async function setIdentityLimits(
  store: Store,
  uuid: string,
  limits: IdentityLimits | undefined,
): Promise<void> {
  await store.setLimits(checkUuid(uuid), limits);
}

/** Throws NOT_FOUND naming `uuid` unless the identity exists (the CLI's commands say which one). */
export async function requireIdentity(store: Store, uuid: string): Promise<void> {
  if (!(await store.getIdentity(checkUuid(uuid))))
    throw new RendezvousError('NOT_FOUND', `no such identity: ${uuid}`);
}

/**
 * Ends an identity's lockout: deletes its wrong-code counter (any uuid may have one, known or
 * not). Addresses it registered from were never locked out.
 */
export async function unlockIdentity(store: Store, uuid: string): Promise<void> {
  await store.unlockIdentity(checkUuid(uuid));
}

/** Deletes an identity with its registration, cookie and last rendezvous; relays drop its parks. */
export async function deleteIdentity(store: Store, uuid: string): Promise<void> {
  await store.deleteIdentity(checkUuid(uuid));
}
