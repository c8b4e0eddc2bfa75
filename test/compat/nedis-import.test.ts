/**
 * `rendezvous import` of a `nedis` append-only log (`nedis.db`), the original's default store:
 * a file of redis commands in RESP multi-bulk form, written as nedis writes it (lower-case
 * command names, every mutating command appended as it ran, no timestamps). The import replays
 * it: the last write wins, deletes are honoured, expired keys are skipped, unknown commands are
 * counted and reported, and every key's line names its fate.
 */
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { embeddedStore } from '../support/store.js';
import { originalAsciiSecret, originalRecord } from './original-model.js';

let env: Awaited<ReturnType<typeof embeddedStore>>;
let dir: string;

beforeAll(async () => {
  env = await embeddedStore('rendezvous-nedis');
  dir = await mkdtemp('/tmp/rv-nedis-');
});
afterAll(async () => {
  await env?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const cliEnv = () => ({
  AWS_ENDPOINT_URL_DYNAMODB: env.endpoint,
  AWS_REGION: 'local',
  RENDEZVOUS_TABLE: env.store.table,
});

/** One command as nedis appends it to its log (`Database#writeToAOF`): byte lengths, CRLF. */
function aof(cmd: string, ...args: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length + 1}\r\n$${cmd.length}\r\n${cmd}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(a);
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

async function logFile(name: string, commands: Buffer[], mtime?: Date): Promise<string> {
  const path = `${dir}/${name}`;
  await writeFile(path, Buffer.concat(commands), { mode: 0o600 });
  if (mtime) await utimes(path, mtime, mtime);
  return path;
}

describe('import of a nedis log (issue 25)', () => {
  it('a log with overwrites, deletes, renames and an expired key imports to exactly the live set', async () => {
    const stale = originalAsciiSecret();
    const fresh = originalAsciiSecret();
    const deleted = originalAsciiSecret();
    const renamed = originalAsciiSecret();
    const expiring = originalAsciiSecret();
    const otherDb = originalAsciiSecret();
    const flushed = originalAsciiSecret();
    const secrets = [stale, fresh, deleted, renamed, expiring, otherDb, flushed];
    const hourAgo = new Date(Date.now() - 3_600_000);
    const path = await logFile(
      'nedis.db',
      [
        aof('select', '0'),
        aof('set', 'nd-live', originalRecord('nd-live', stale)),
        aof('set', 'nd-gone', originalRecord('nd-gone', deleted)),
        aof('set', 'nd-live', originalRecord('nd-live', fresh)),
        aof('del', 'nd-gone'),
        aof('set', 'nd-old-name', originalRecord('nd-moved', renamed)),
        aof('rename', 'nd-old-name', 'nd-moved'),
        // Lived 60 s from a moment at least an hour ago (the log's last write): gone now.
        aof('setex', 'nd-temp', '60', originalRecord('nd-temp', expiring)),
        aof('hset', 'nd-hash', 'field', 'value'),
        aof('frobnicate', 'nd-live', 'x'),
        aof('select', '1'),
        aof('set', 'nd-flushed', originalRecord('nd-flushed', flushed)),
        aof('flushdb'),
        aof('set', 'nd-db1', originalRecord('nd-db1', otherDb)),
        aof('select', '0'),
      ],
      hourAgo,
    );
    const r = await runCli(['import', path], cliEnv());
    const out = r.stdout.toString();
    for (const s of secrets) expect(out + r.stderr).not.toContain(s);
    expect(r.stderr).toBe(
      'rendezvous: the log holds 1 command this import does not know (frobnicate ×1): the keys it names may differ from what was live\n',
    );
    expect(r.code).toBe(0);
    expect(out).toMatch(/^imported 2, unchanged 0 .*skipped 5\b/);
    expect(out).toContain('  imported   nd-live\n');
    expect(out).toContain('  imported   nd-moved\n');
    expect(out).toContain('  skipped    nd-gone: deleted\n');
    expect(out).toContain('  skipped    nd-old-name: deleted (renamed to nd-moved)\n');
    expect(out).toContain('  skipped    nd-temp: expired\n');
    expect(out).toContain('  skipped    nd-hash: not a string (hash)\n');
    expect(out).toContain('  skipped    nd-db1: in database 1 (this import reads database 0; --db 1)\n');
    // The last write wins: the overwrite's secret, not the first one.
    expect((await env.store.getIdentity('nd-live'))?.secret).toBe(fresh);
    expect((await env.store.getIdentity('nd-moved'))?.secret).toBe(renamed);
    for (const gone of ['nd-gone', 'nd-old-name', 'nd-temp', 'nd-hash', 'nd-db1', 'nd-flushed']) {
      expect(await env.store.getIdentity(gone), gone).toBeUndefined();
    }

    // Again: what is there is unchanged; --db 1 reads the other database (flushed but for one key).
    const again = await runCli(['import', path], cliEnv());
    expect(again.stdout.toString()).toMatch(/^imported 0, unchanged 2/);
    expect(again.stdout.toString()).toContain('  unchanged  nd-live\n');
    const db1 = await runCli(['import', '--db', '1', path], cliEnv());
    expect(db1.stdout.toString()).toContain('  imported   nd-db1\n');
    expect(db1.stdout.toString()).toContain('  skipped    nd-flushed: deleted\n');
    expect((await env.store.getIdentity('nd-db1'))?.secret).toBe(otherDb);
  }, 120_000);

  it('absolute expiry times are judged against now; a key with a lifetime still running is named, not imported', async () => {
    const future = Math.floor(Date.now() / 1000) + 3_600;
    const past = Math.floor(Date.now() / 1000) - 60;
    const path = await logFile('redis-style.aof', [
      aof('SET', 'nd-past', originalRecord('nd-past', originalAsciiSecret())),
      aof('EXPIREAT', 'nd-past', String(past)),
      aof('SET', 'nd-future', originalRecord('nd-future', originalAsciiSecret())),
      aof('PEXPIREAT', 'nd-future', String(future * 1000)),
      aof('SET', 'nd-kept', originalRecord('nd-kept', originalAsciiSecret())),
      aof('EXPIREAT', 'nd-kept', String(future)),
      aof('PERSIST', 'nd-kept'),
    ]);
    const r = await runCli(['import', path], cliEnv());
    const out = r.stdout.toString();
    expect(r.code).toBe(0);
    expect(out).toContain('  skipped    nd-past: expired\n');
    expect(out).toMatch(
      / {2}skipped {4}nd-future: has a lifetime \(until \d{4}-\d\d-\d\dT[\d:]+Z\): not imported\n/,
    );
    expect(out).toContain('  imported   nd-kept\n');
    expect(await env.store.getIdentity('nd-past')).toBeUndefined();
    expect(await env.store.getIdentity('nd-future')).toBeUndefined();
  }, 120_000);

  it('a log cut off inside its last command imports what came before and says so', async () => {
    const whole = aof('set', 'nd-cut', originalRecord('nd-cut', originalAsciiSecret()));
    const path = await logFile('cut.db', [
      aof('set', 'nd-before-cut', originalRecord('nd-before-cut', originalAsciiSecret())),
      whole.subarray(0, whole.length - 20),
    ]);
    const r = await runCli(['import', path], cliEnv());
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toContain('  imported   nd-before-cut\n');
    expect(r.stderr).toMatch(/the log ends inside a command \(the last \d+ bytes are left out\)/);
    expect(await env.store.getIdentity('nd-cut')).toBeUndefined();
  }, 120_000);
});
