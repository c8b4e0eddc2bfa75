/**
 * `rendezvous import` and the existing-secret options of `provision`: bringing node-rendezvous
 * identities over. Secrets come from a file, stdin or the environment, never from argv, and are
 * never printed back.
 */
import { readFile, stat } from 'node:fs/promises';
import { type Command, InvalidArgumentError } from 'commander';
import { isRendezvousError } from '../../core/errors.js';
import { printable, printableJson } from '../../core/printable.js';
import { ORIGINAL_COMPAT, type TotpCompat } from '../../core/totp.js';
import { DEFAULT_TABLE } from '../../server/config.js';
import { DEFAULT_COOKIE_TTL_SECONDS } from '../../server/cookies.js';
import { originalCompatFor, setIdentityCompat } from '../../server/identities.js';
import { Store } from '../../server/store/index.js';
import { integer } from '../program.js';
import { type ImportReport, importEntries, MAX_IMPORT_BYTES } from './import.js';
import { type ImportSource, sourceFromBytes, sourceFromRedis } from './sources.js';

/** Reads stdin to the end as bytes, refusing more than `max`. */
export async function readStdinBytes(max: number = MAX_IMPORT_BYTES): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of process.stdin as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > max) throw new InvalidArgumentError(`stdin holds more than ${max} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/** Reads stdin to the end as UTF-8 text, refusing more than `max` bytes. */
export async function readStdin(max: number = MAX_IMPORT_BYTES): Promise<string> {
  return (await readStdinBytes(max)).toString('utf8');
}

/** The existing secret `provision` was asked to use (`--secret-env` or `--secret-stdin`), if any. */
export async function existingSecret(o: {
  secretEnv?: boolean;
  secretStdin?: boolean;
}): Promise<string | undefined> {
  if (o.secretEnv && o.secretStdin)
    throw new InvalidArgumentError('--secret-env or --secret-stdin, not both');
  if (o.secretEnv) {
    const s = process.env.RENDEZVOUS_SECRET;
    if (!s) throw new InvalidArgumentError('--secret-env: RENDEZVOUS_SECRET is not set');
    return secretOf(s);
  }
  if (o.secretStdin) {
    const s = (await readStdin(4096)).trim();
    if (!s) throw new InvalidArgumentError('--secret-stdin: nothing on stdin');
    return secretOf(s);
  }
  return undefined;
}

/** A base32 secret, or the `secret=` of an `otpauth://` URI. */
function secretOf(text: string): string {
  if (!text.startsWith('otpauth://')) return text;
  try {
    const s = new URL(text).searchParams.get('secret');
    if (s) return s;
  } catch {
    // Falls through to the same message.
  }
  throw new InvalidArgumentError('the otpauth:// URI has no secret');
}

/** The compat settings `provision --compat` gives (the original's), for a given or fresh secret. */
export function provisionCompat(o: { compat?: boolean }, secret: string | undefined): TotpCompat | undefined {
  if (!o.compat) return undefined;
  // A fresh compat secret is ASCII (plain RFC 6238 keys); an existing one may need speakeasy's.
  const compat = secret === undefined ? { ...ORIGINAL_COMPAT } : originalCompatFor(secret);
  delete compat.importedFrom;
  return compat;
}

/** True when the operator must look: a conflict, or a record that could not be read. */
export const reportNeedsAttention = (r: ImportReport): boolean =>
  r.conflicts.length > 0 || r.skipped.some((s) => s.problem);

/**
 * One-line summary of an import, then one line per key naming its fate (keys only, never
 * secrets; keys come from the input, so their control characters are escaped).
 */
export function formatReport(r: ImportReport): string {
  const line = (fate: string, key: string, reason?: string) =>
    `  ${fate.padEnd(11)}${printable(key)}${reason ? `: ${printable(reason)}` : ''}`;
  const lines = [
    `imported ${r.imported.length}, unchanged ${r.unchanged.length} (already present, same secret), ` +
      `conflicts ${r.conflicts.length} (present with another secret; --force replaces), ` +
      `replaced ${r.replaced.length}, skipped ${r.skipped.length}`,
    ...r.imported.map((k) => line('imported', k)),
    ...r.unchanged.map((k) => line('unchanged', k)),
    ...r.conflicts.map((k) => line('conflict', k)),
    ...r.replaced.map((k) => line('replaced', k)),
    ...r.skipped.map((s) => line('skipped', s.key, s.reason)),
  ];
  return `${lines.join('\n')}\n`;
}

/** Reads the source the options name (a file, stdin, or `--redis`). */
async function readSource(
  file: string | undefined,
  o: { redis?: string; db?: number },
): Promise<ImportSource> {
  if (o.redis) return sourceFromRedis(o.redis);
  if (file && file !== '-') {
    const [data, info] = await Promise.all([readFile(file), stat(file)]);
    if (data.length > MAX_IMPORT_BYTES) throw new Error(`more than ${MAX_IMPORT_BYTES} bytes`);
    return sourceFromBytes(data, { db: o.db, writtenBy: info.mtimeMs });
  }
  return sourceFromBytes(await readStdinBytes(), { db: o.db, writtenBy: Date.now() });
}

/** Adds `rendezvous import [file]` to the command tree. */
export function addImportCommand(program: Command, fail: (message: string) => never): void {
  program
    .command('import')
    .description(
      "create identities from node-rendezvous's records (a JSON dump, `redis-cli --raw` lines, or nedis's command log nedis.db), same uuid and secret",
    )
    .argument('[file]', 'the dump or command log (default: stdin)')
    .option(
      '--redis <url>',
      "read the records from the original's redis or nedis: redis://host[:port][/db] (password: REDISCLI_AUTH)",
    )
    .option('--db <n>', 'the database of a command log to import (default 0)', integer(0, 1_000_000))
    .option('--table <name>', 'table (default: RENDEZVOUS_TABLE or rendezvous)')
    .option('--force', 'replace the secret of identities already present with a different one')
    .option('--json', 'print the report as JSON')
    .action(async (file: string | undefined, o) => {
      if (o.redis && file) fail('a file or --redis, not both');
      if (o.redis && o.db !== undefined)
        fail('--db is for a command log; with --redis, put the database in the URL');
      let source: ImportSource;
      try {
        source = await readSource(file, o);
      } catch (err) {
        // The error names the source, never its contents.
        const what = o.redis ? 'from redis' : (file ?? 'stdin');
        fail(`cannot read ${what}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      for (const w of source.warnings) process.stderr.write(`rendezvous: ${printable(w)}\n`);
      const store = new Store({ table: o.table ?? process.env.RENDEZVOUS_TABLE ?? DEFAULT_TABLE });
      try {
        const report = await importEntries(store, source.entries, {
          force: Boolean(o.force),
          skipped: source.skipped,
        });
        process.stdout.write(o.json ? `${printableJson(report)}\n` : formatReport(report));
        // Conflicts and unreadable records need the operator; a re-import of what is there does not.
        if (reportNeedsAttention(report)) process.exitCode = 1;
      } catch (err) {
        fail(
          isRendezvousError(err) ? (err.detail ?? err.message) : `import failed: ${(err as Error).message}`,
        );
      } finally {
        store.close();
      }
    });
}

/** The settings `rendezvous compat` asks for, on top of `base`. */
export function compatFromOptions(
  base: TotpCompat,
  o: {
    digits?: string;
    encoding?: string;
    window?: string;
    reuseWithinStep?: string;
    cookieLifetime?: string;
  },
): TotpCompat {
  const next: TotpCompat = { ...base };
  if (o.digits !== undefined) next.digits = o.digits === 'original' ? 'original' : Number(o.digits);
  if (o.encoding !== undefined) next.encoding = o.encoding as TotpCompat['encoding'];
  if (o.window !== undefined) next.window = Number(o.window) as TotpCompat['window'];
  if (o.reuseWithinStep !== undefined) {
    if (!['yes', 'no'].includes(o.reuseWithinStep))
      throw new InvalidArgumentError('--reuse-within-step yes|no');
    next.reuseWithinStep = o.reuseWithinStep === 'yes';
  }
  if (o.cookieLifetime !== undefined) {
    next.cookieLifetime =
      o.cookieLifetime === 'next-registration' ? 'next-registration' : Number(o.cookieLifetime);
  }
  return next;
}

/**
 * A strict identity's rules written as compat settings, so that naming one setting on a strict
 * identity changes that setting alone (not every setting to the original's).
 */
function strictAsCompat(digits: number): TotpCompat {
  return {
    digits,
    encoding: 'rfc6238',
    window: 1,
    reuseWithinStep: false,
    cookieLifetime: DEFAULT_COOKIE_TTL_SECONDS,
  };
}

/** Adds `rendezvous compat UUID …`: shows or changes an identity's compatibility settings. */
export function addCompatCommand(program: Command, fail: (message: string) => never): void {
  program
    .command('compat')
    .description(
      "show or change an identity's compatibility settings (node-rendezvous clients); --strict removes them",
    )
    .argument('<uuid>', 'the identity')
    .option(
      '--digits <d>',
      'shortest code accepted: 6–10 last digits (original: from 6, as the original); the whole value always',
    )
    .option('--encoding <e>', 'rfc6238, or speakeasy (UTF-8 of binary secret bytes)')
    .option('--window <w>', '0 (the original) or 1 step of drift')
    .option('--reuse-within-step <yes|no>', 'accept a code again within its step (bounded)')
    .option('--cookie-lifetime <l>', 'next-registration, or seconds')
    .option('--strict', 'remove every compatibility setting (strict RFC 6238, one use per code)')
    .option('--table <name>', 'table (default: RENDEZVOUS_TABLE or rendezvous)')
    .action(async (uuid: string, o) => {
      const store = new Store({ table: o.table ?? process.env.RENDEZVOUS_TABLE ?? DEFAULT_TABLE });
      try {
        const id = await store.getIdentity(uuid);
        if (!id) fail(`no identity ${uuid}`);
        const changing = ['digits', 'encoding', 'window', 'reuseWithinStep', 'cookieLifetime'].some(
          (k) => o[k] !== undefined,
        );
        if (o.strict && changing) fail('--strict or settings, not both');
        if (o.strict || changing) {
          const next = o.strict ? undefined : compatFromOptions(id.compat ?? strictAsCompat(id.digits), o);
          await setIdentityCompat(store, uuid, next);
        }
        const now = await store.getIdentity(uuid);
        process.stdout.write(`${uuid}  ${now?.compat ? JSON.stringify(now.compat) : 'strict'}\n`);
      } catch (err) {
        fail(isRendezvousError(err) ? (err.detail ?? err.message) : (err as Error).message);
      } finally {
        store.close();
      }
    });
}
