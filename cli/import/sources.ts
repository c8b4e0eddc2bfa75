/**
 * Where `rendezvous import` reads the original's records: a dump (JSON or `redis-cli --raw`
 * lines), a command log (nedis's `nedis.db`, redis's `appendonly.aof`), or a running redis or
 * nedis. Each source gives the records to import and its own verdict on every other key, so that
 * the report names every key's fate, plus lines about the read as a whole.
 */
import { CommandLogError, isCommandLog, replayCommandLog } from './command-log.js';
import { type ImportEntry, type ImportSkip, splitDump } from './import.js';
import { readRedis } from './redis.js';

/** What a source holds for an import. */
export interface ImportSource {
  entries: ImportEntry[];
  skipped: ImportSkip[];
  /** Lines for the operator about the read as a whole (stderr), e.g. unknown commands. */
  warnings: string[];
}

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

/**
 * The records of a file's or stdin's bytes: a command log when it starts like one (replayed,
 * database `db`), else a dump. `writtenBy` is the latest moment the log can have been written
 * (the file's modification time), which dates its relative lifetimes.
 */
export function sourceFromBytes(data: Buffer, opts: { db?: number; writtenBy: number }): ImportSource {
  if (!isCommandLog(data)) {
    if (opts.db !== undefined)
      throw new CommandLogError('--db applies to a command log (nedis.db), not a dump');
    return { entries: splitDump(data.toString('utf8')), skipped: [], warnings: [] };
  }
  const db = opts.db ?? 0;
  const replay = replayCommandLog(data, { db, writtenBy: opts.writtenBy });
  const out: ImportSource = { entries: [], skipped: [], warnings: [] };
  for (const [key, fate] of replay.keys) {
    if (fate.kind === 'gone') out.skipped.push({ key, reason: fate.why, problem: false });
    else if (fate.kind === 'other')
      out.skipped.push({ key, reason: `not a string (${fate.type})`, problem: false });
    else if (fate.expiresAt !== undefined) {
      // An identity with a lifetime is not one the original kept; this store keeps none.
      const until = new Date(fate.expiresAt).toISOString().replace(/\.\d{3}Z$/, 'Z');
      out.skipped.push({
        key,
        reason: `has a lifetime (until ${until}${fate.relative ? ' at the latest' : ''}): not imported`,
        problem: false,
      });
    } else out.entries.push({ key, record: fate.value.toString('utf8'), where: key });
  }
  for (const [key, n] of replay.otherDatabases) {
    out.skipped.push({
      key,
      reason: `in database ${n} (this import reads database ${db}; --db ${n})`,
      problem: false,
    });
  }
  if (replay.unknown.size) {
    const total = [...replay.unknown.values()].reduce((a, b) => a + b, 0);
    const names = [...replay.unknown].map(([name, n]) => `${name} ×${n}`).join(', ');
    out.warnings.push(
      `the log holds ${plural(total, 'command', 'commands')} this import does not know (${names}): the keys it names may differ from what was live`,
    );
  }
  if (replay.truncatedBytes) {
    out.warnings.push(
      `the log ends inside a command (the last ${replay.truncatedBytes} bytes are left out), as after a crash mid-write`,
    );
  }
  return out;
}

/** The records of a running redis (or nedis) at `url`. */
export async function sourceFromRedis(url: string): Promise<ImportSource> {
  const read = await readRedis(url);
  const entries = Object.entries(read.records).map(([key, record]) => ({ key, record, where: key }));
  const others = read.skipped.filter((s) => s.reason.startsWith('not a string')).length;
  const warnings = [...read.warnings];
  if (others) {
    warnings.push(
      `${plural(others, 'redis key is not a string', 'redis keys are not strings')} (left out; named in the report)`,
    );
  }
  return { entries, skipped: read.skipped, warnings };
}
