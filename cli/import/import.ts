/**
 * Bringing node-rendezvous identities over: parsing the original's redis records (or a dump of
 * them) and creating identities with the same uuid and secret, idempotently. Records carry
 * secrets: nothing here logs or echoes one, and reports name uuids only.
 *
 * Accepted input (see docs/migrating.md):
 *   - a JSON object of uuid → record (the record as a JSON string, as redis holds it, or as an object);
 *   - a JSON array of records (strings or objects), or one record object;
 *   - lines: one record's JSON per line, each optionally preceded by its key on the line before
 *     (what `redis-cli --raw` prints for `KEYS`/`GET` pairs); blank lines are ignored.
 */

import { isRendezvousError } from '../../core/errors.js';
import { base32Decode, type TotpCompat, type TotpParams } from '../../core/totp.js';
import { secretsEqual } from '../../server/cookies.js';
import {
  checkSecret,
  checkUuid,
  originalCompatFor,
  type ProvisionedIdentity,
  provisionIdentity,
} from '../../server/identities.js';
import type { Store } from '../../server/store/index.js';

/** An identity ready to be created from one of the original's records (holds the secret). */
export interface ImportDraft {
  uuid: string;
  secret: string;
  step: number;
  algorithm: TotpParams['algorithm'];
  compat: TotpCompat;
}

/**
 * A key (or record) that was not imported, and why (never with its secret): `not JSON`, `not an
 * identity (…)`, `not usable here (…)`, `deleted`, `expired`, `not a string (hash)` ….
 */
export interface ImportSkip {
  /** The record's key or uuid when known, else its position. */
  key: string;
  reason: string;
  /** A record that could not be read (the operator should look): the import exits 1. */
  problem: boolean;
}

/** What one import did: every key of the input under exactly one fate. */
export interface ImportReport {
  imported: string[];
  /** Already present with the same secret. */
  unchanged: string[];
  /** Already present with a different secret: left alone (or replaced, with `force`). */
  conflicts: string[];
  replaced: string[];
  skipped: ImportSkip[];
}

/** One record of the input, with the key it was stored under (when the input says). */
export interface ImportEntry {
  key?: string;
  record: unknown;
  where: string;
}

/** Largest dump accepted (a record is about 400 bytes: this is well over 100,000 identities). */
export const MAX_IMPORT_BYTES = 64 * 1024 * 1024;

const ALGORITHMS: Record<string, TotpParams['algorithm']> = {
  sha1: 'SHA1',
  sha256: 'SHA256',
  sha512: 'SHA512',
};

/** A record that is not imported; the message is the report's reason. */
class RecordError extends Error {}

/** A record whose fields are there but are refused (the reason in brackets). */
const unusable = (why: string) => new RecordError(`not usable here (${why})`);

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The records of a dump, each with the key it was stored under (when the dump says). */
export function splitDump(text: string): ImportEntry[] {
  const whole = parseJson(text.trim());
  if (Array.isArray(whole)) return whole.map((record, i) => ({ record, where: `#${i + 1}` }));
  if (whole && typeof whole === 'object') {
    if ('authParams' in whole || 'authURL' in whole) return [{ record: whole, where: '#1' }];
    return Object.entries(whole).map(([key, record]) => ({ key, record, where: key }));
  }
  // Lines: records, each optionally after its key.
  const out: ImportEntry[] = [];
  let key: string | undefined;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (!line) continue;
    const value = line.startsWith('{') ? parseJson(line) : undefined;
    if (value && typeof value === 'object') {
      out.push({ key, record: value, where: key ?? `line ${i + 1}` });
      key = undefined;
    } else if (key === undefined && !line.startsWith('{')) {
      key = line;
    } else {
      out.push({ key, record: line, where: key ?? `line ${i + 1}` });
      key = undefined;
    }
  }
  if (key !== undefined) out.push({ key, record: undefined, where: key });
  return out;
}

/**
 * Reads one of the original's records (object or JSON string) into a draft, checking every
 * field it relies on. `key` is the redis key it was stored under, which must be its uuid.
 */
export function draftFromRecord(record: unknown, key?: string): ImportDraft {
  const rec = typeof record === 'string' ? parseJson(record) : record;
  if (rec === undefined) throw new RecordError('not JSON');
  if (!rec || typeof rec !== 'object' || Array.isArray(rec))
    throw new RecordError('not an identity (not a JSON object)');
  const r = rec as { uuid?: unknown; authURL?: unknown; authParams?: Record<string, unknown> };
  const uuid = typeof r.uuid === 'string' ? r.uuid : key;
  if (typeof uuid !== 'string') throw new RecordError('not an identity (no uuid)');
  const p = r.authParams && typeof r.authParams === 'object' ? r.authParams : {};
  if (p.protocol !== undefined && p.protocol !== 'totp') throw new RecordError('not an identity (not TOTP)');
  const fromUri = typeof r.authURL === 'string' ? uriSecret(r.authURL) : undefined;
  const base32 = typeof p.base32 === 'string' ? p.base32 : fromUri;
  if (!base32) throw new RecordError('not an identity (no secret: authParams.base32 or authURL secret=)');

  if (key !== undefined && key !== uuid) throw unusable('the key and the record name different uuids');
  try {
    checkUuid(uuid);
  } catch {
    throw unusable('uuid: 1–128 of A–Z a–z 0–9 . _ : -');
  }
  let secret: string;
  try {
    secret = checkSecret(base32);
  } catch (err) {
    throw unusable((err as Error).message);
  }
  if (fromUri && !base32Decode(fromUri).equals(base32Decode(secret))) {
    throw unusable('authURL and authParams.base32 hold different secrets');
  }

  const step = p.step === undefined ? 30 : Number(p.step);
  if (!Number.isInteger(step) || step < 1 || step > 3600) throw unusable('step must be 1–3600 seconds');
  const algorithm = ALGORITHMS[String(p.algorithm ?? 'sha1').toLowerCase()];
  if (!algorithm) throw unusable('algorithm must be sha1, sha256 or sha512');
  const length = p.length === undefined ? 6 : Number(p.length);
  if (!Number.isInteger(length) || length < 6) {
    throw unusable('length below 6: such codes are refused by the API (6–10 digits)');
  }
  // The original never read `length`: it checked a code at whatever length the client sent
  // (from 6), so every imported identity takes every length its clients may use.
  const digits = 'original';
  const issuer = typeof p.issuer === 'string' ? p.issuer.slice(0, 200) : undefined;
  return {
    uuid,
    secret,
    step,
    algorithm,
    compat: {
      ...originalCompatFor(secret, digits),
      importedFrom: issuer ? `node-rendezvous (${issuer})` : 'node-rendezvous',
    },
  };
}

function uriSecret(uri: string): string | undefined {
  try {
    return new URL(uri).searchParams.get('secret') ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * Imports every record of a dump. Idempotent: a uuid already present with the same secret is
 * unchanged; one present with a different secret is a conflict, left alone unless `force`, which
 * replaces the secret and settings and ends the identity's registrations (as a rotation does).
 */
export function importIdentities(
  store: Store,
  dump: string,
  opts: { force?: boolean; nowMs?: number } = {},
): Promise<ImportReport> {
  return importEntries(store, splitDump(dump), opts);
}

/**
 * Imports records already split from their source (a dump, a replayed log, a redis); `skipped`
 * are the source's own verdicts on keys that hold no record (deleted, expired, another type …).
 */
export async function importEntries(
  store: Store,
  entries: Iterable<ImportEntry>,
  opts: { force?: boolean; nowMs?: number; skipped?: ImportSkip[] } = {},
): Promise<ImportReport> {
  const report: ImportReport = {
    imported: [],
    unchanged: [],
    conflicts: [],
    replaced: [],
    skipped: [...(opts.skipped ?? [])],
  };
  const seen = new Set<string>();
  for (const { key, record, where } of entries) {
    let draft: ImportDraft;
    try {
      draft = draftFromRecord(record, key);
    } catch (err) {
      if (!(err instanceof RecordError)) throw err;
      report.skipped.push({ key: where.slice(0, 140), reason: err.message, problem: true });
      continue;
    }
    if (seen.has(draft.uuid)) {
      report.skipped.push({ key: draft.uuid, reason: 'uuid appears twice in the input', problem: true });
      continue;
    }
    seen.add(draft.uuid);
    await importOne(store, draft, opts, report);
  }
  return report;
}

async function importOne(
  store: Store,
  draft: ImportDraft,
  opts: { force?: boolean; nowMs?: number },
  report: ImportReport,
): Promise<void> {
  const existing = await store.getIdentity(draft.uuid);
  if (!existing) {
    try {
      await provisionIdentity(store, {
        uuid: draft.uuid,
        secret: draft.secret,
        compat: draft.compat,
        params: { step: draft.step, algorithm: draft.algorithm },
        nowMs: opts.nowMs,
      });
      report.imported.push(draft.uuid);
      return;
    } catch (err) {
      // Created meanwhile by someone else: judge it like any existing identity.
      if (!isRendezvousError(err, 'ALREADY_EXISTS')) throw err;
    }
  }
  const now = existing ?? (await store.getIdentity(draft.uuid));
  if (now && secretsEqual(now.secret, draft.secret)) {
    report.unchanged.push(draft.uuid);
  } else if (opts.force) {
    const digits = typeof draft.compat.digits === 'number' ? draft.compat.digits : 10;
    await store.rotateSecret(
      draft.uuid,
      { secret: draft.secret, digits, step: draft.step, algorithm: draft.algorithm },
      draft.compat,
    );
    report.replaced.push(draft.uuid);
  } else {
    report.conflicts.push(draft.uuid);
  }
}

/** The identity record of node-rendezvous (what its redis holds under the uuid). */
export interface OriginalRecord {
  uuid: string;
  authURL: string;
  authParams: {
    algorithm: string;
    length: number;
    name: string;
    issuer: string;
    step: number;
    base32: string;
    protocol: 'totp';
  };
}

/** The original's record for an identity (`provision --compat --json`): what its clients are configured with. */
export function originalRecordOf(id: ProvisionedIdentity, issuer = 'rendezvous'): OriginalRecord {
  const length = id.compat?.digits === 'original' || !id.compat ? 40 : (id.compat.digits as number);
  const label = encodeURIComponent(`${issuer}:${id.uuid}`);
  return {
    uuid: id.uuid,
    authURL: `otpauth://totp/${label}?secret=${id.secret}&issuer=${encodeURIComponent(issuer)}&digits=${length}&period=${id.step}`,
    authParams: {
      algorithm: id.algorithm.toLowerCase(),
      length,
      name: id.uuid,
      issuer,
      step: id.step,
      base32: id.secret,
      protocol: 'totp',
    },
  };
}
