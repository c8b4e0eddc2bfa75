/**
 * Reading a redis command log: `nedis.db`, the append-only file of the original's default store
 * (`nedis`, an embedded redis clone), and redis's own `appendonly.aof` (without an RDB preamble).
 * Both are RESP multi-bulk commands, one after another, each written as it ran. Replaying them in
 * order gives what the store held: the last write wins, deletes and renames are honoured, and
 * keys whose lifetime has run out are left out. Nothing here echoes a value (values are secrets).
 *
 * nedis writes command names in lower case, logs SET, SETNX, SETEX, MSET, MSETNX, DEL, RENAME,
 * the counters, APPEND, HSET, HMSET, SELECT, FLUSHDB and FLUSHALL, and no timestamps: SETEX holds
 * a number of seconds counted from a moment the log does not record. The file's modification
 * time bounds that moment (no command was written after it), so a relative lifetime that ended
 * before now counted from the mtime certainly ended. Redis writes absolute times (PEXPIREAT).
 */

/** What the replay knows of one key at the end. */
export type KeyFate =
  | { kind: 'string'; value: Buffer; expiresAt?: number; relative?: boolean }
  | { kind: 'other'; type: string }
  | { kind: 'gone'; why: string };

/** The outcome of replaying a log. */
export interface LogReplay {
  /** The chosen database's keys, in the order each was first written. */
  keys: Map<string, KeyFate>;
  /** Live keys in other databases, by key: their database number. */
  otherDatabases: Map<string, number>;
  /** Commands read. */
  commands: number;
  /** Commands this replay does not know, by name (lower case), with how often each came. */
  unknown: Map<string, number>;
  /** Bytes at the end that do not hold a whole command (a write cut short), if any. */
  truncatedBytes: number;
}

/** Thrown when the input is not a command log (or one this reader cannot follow). */
export class CommandLogError extends Error {}

/** True when `data` looks like a command log (its first command's header) rather than a dump. */
export function isCommandLog(data: Buffer): boolean {
  return /^\*\d+\r\n\$\d+\r\n/.test(data.subarray(0, 32).toString('latin1'));
}

/** Reads one command at `at`; undefined when the data ends inside it. */
function readCommand(data: Buffer, at: number): { args: Buffer[]; next: number } | undefined {
  const line = (from: number, mark: string): { n: number; next: number } | undefined => {
    const eol = data.indexOf('\r\n', from);
    if (eol === -1) return undefined;
    const text = data.toString('latin1', from, eol);
    if (text[0] !== mark || !/^\d{1,10}$/.test(text.slice(1))) {
      throw new CommandLogError(`not a command log: unexpected bytes at offset ${from}`);
    }
    return { n: Number(text.slice(1)), next: eol + 2 };
  };
  const head = line(at, '*');
  if (!head) return undefined;
  if (head.n < 1 || head.n > 1_000_000) throw new CommandLogError(`bad command size at offset ${at}`);
  const args: Buffer[] = [];
  let next = head.next;
  for (let i = 0; i < head.n; i++) {
    const len = line(next, '$');
    if (!len) return undefined;
    if (data.length < len.next + len.n + 2) return undefined;
    if (data.toString('latin1', len.next + len.n, len.next + len.n + 2) !== '\r\n') {
      throw new CommandLogError(`not a command log: a value's length is wrong at offset ${len.next}`);
    }
    args.push(data.subarray(len.next, len.next + len.n));
    next = len.next + len.n + 2;
  }
  return { args, next };
}

/** Commands that create a key of a non-string type (their contents do not matter here). */
const TYPE_OF: Record<string, string> = {};
for (const c of ['hset', 'hmset', 'hsetnx', 'hincrby', 'hincrbyfloat']) TYPE_OF[c] = 'hash';
for (const c of ['lpush', 'rpush', 'linsert']) TYPE_OF[c] = 'list';
for (const c of ['sadd']) TYPE_OF[c] = 'set';
for (const c of ['zadd', 'zincrby']) TYPE_OF[c] = 'zset';

/**
 * Commands that change nothing a replay keeps: transactions, and removals inside a non-string
 * key (such a key is left out however much it holds).
 */
const NO_EFFECT = new Set([
  'multi',
  'exec',
  'discard',
  'ping',
  'echo',
  'auth',
  'hdel',
  'lpop',
  'rpop',
  'lrem',
  'ltrim',
  'lset',
  'lpushx',
  'rpushx',
  'srem',
  'spop',
  'zrem',
  'zremrangebyscore',
  'zremrangebyrank',
]);

/**
 * Replays a command log and returns database `db`'s keys with their fates. `writtenBy` is the
 * latest moment any command can have been written (the file's mtime; now for stdin), `nowMs`
 * the moment lifetimes are judged against.
 */
export function replayCommandLog(
  data: Buffer,
  opts: { db?: number; writtenBy: number; nowMs?: number },
): LogReplay {
  if (data.subarray(0, 5).toString('latin1') === 'REDIS') {
    throw new CommandLogError(
      'this AOF starts with an RDB snapshot, which this import cannot read: use --redis against the running server',
    );
  }
  const now = opts.nowMs ?? Date.now();
  const dbs = new Map<number, Map<string, KeyFate>>();
  const dbOf = (n: number) => {
    const d = dbs.get(n) ?? new Map<string, KeyFate>();
    dbs.set(n, d);
    return d;
  };
  let db = dbOf(0);
  const unknown = new Map<string, number>();
  let commands = 0;
  let at = 0;

  const live = (key: string): Exclude<KeyFate, { kind: 'gone' }> | undefined => {
    const f = db.get(key);
    if (!f || f.kind === 'gone') return undefined;
    // A lifetime that certainly ended is a deleted key to the commands after it.
    if (f.kind === 'string' && certainlyExpired(f, now)) return undefined;
    return f;
  };
  const put = (key: string, value: Buffer, expiresAt?: number, relative?: boolean) => {
    db.set(key, { kind: 'string', value, expiresAt, relative });
  };
  const gone = (key: string, why: string) => {
    if (db.has(key)) db.set(key, { kind: 'gone', why });
  };
  const relativeDeadline = (ms: number) => opts.writtenBy + ms;

  while (at < data.length) {
    // Blank bytes between commands (a hand-edited file, a trailing newline) are skipped.
    if (data[at] === 0x0d || data[at] === 0x0a) {
      at++;
      continue;
    }
    const cmd = readCommand(data, at);
    if (!cmd) break;
    at = cmd.next;
    commands++;
    const [nameBuf, ...rest] = cmd.args;
    const name = (nameBuf as Buffer).toString('latin1').toLowerCase();
    const args = rest.map((b) => b.toString('utf8'));
    const key = args[0] ?? '';
    const n = (i: number) => Number(args[i]);
    switch (name) {
      case 'select':
        db = dbOf(Number.isInteger(n(0)) && n(0) >= 0 ? n(0) : 0);
        break;
      case 'set': {
        let expiresAt: number | undefined;
        let relative = false;
        let nx = false;
        let xx = false;
        let keepTtl = false;
        for (let i = 2; i < args.length; i++) {
          const opt = (args[i] as string).toLowerCase();
          if (opt === 'nx') nx = true;
          else if (opt === 'xx') xx = true;
          else if (opt === 'keepttl') keepTtl = true;
          else if (opt === 'ex' || opt === 'px' || opt === 'exat' || opt === 'pxat') {
            const t = n(++i) * (opt === 'ex' || opt === 'exat' ? 1000 : 1);
            relative = opt === 'ex' || opt === 'px';
            expiresAt = relative ? relativeDeadline(t) : t;
          }
        }
        const before = live(key);
        if ((nx && before) || (xx && !before)) break;
        if (keepTtl && before?.kind === 'string') {
          expiresAt = before.expiresAt;
          relative = !!before.relative;
        }
        put(key, rest[1] ?? Buffer.alloc(0), expiresAt, relative);
        break;
      }
      case 'getset':
        put(key, rest[1] ?? Buffer.alloc(0));
        break;
      case 'setnx':
        if (!live(key)) put(key, rest[1] ?? Buffer.alloc(0));
        break;
      case 'setex':
      case 'psetex':
        put(key, rest[2] ?? Buffer.alloc(0), relativeDeadline(name === 'setex' ? n(1) * 1000 : n(1)), true);
        break;
      case 'mset':
      case 'msetnx': {
        const pairs: Array<[string, Buffer]> = [];
        for (let i = 0; i + 1 < rest.length; i += 2) pairs.push([args[i] as string, rest[i + 1] as Buffer]);
        if (name === 'msetnx' && pairs.some(([k]) => live(k))) break;
        for (const [k, v] of pairs) put(k, v);
        break;
      }
      case 'append': {
        const before = live(key);
        if (before?.kind === 'other') break;
        const value = Buffer.concat([before?.value ?? Buffer.alloc(0), rest[1] ?? Buffer.alloc(0)]);
        put(key, value, before?.expiresAt, before?.relative);
        break;
      }
      case 'incr':
      case 'decr':
      case 'incrby':
      case 'decrby': {
        const before = live(key);
        if (before?.kind === 'other') break;
        const by = name === 'incr' ? 1 : name === 'decr' ? -1 : name === 'incrby' ? n(1) : -n(1);
        const was = before ? Number(before.value.toString('latin1')) : 0;
        if (!Number.isFinite(was) || !Number.isFinite(by)) break;
        put(key, Buffer.from(String(was + by)), before?.expiresAt, before?.relative);
        break;
      }
      case 'del':
      case 'unlink':
        for (const k of args) if (live(k)) gone(k, 'deleted');
        break;
      case 'rename':
      case 'renamenx': {
        const to = args[1] ?? '';
        const from = live(key);
        if (!from || to === key || (name === 'renamenx' && live(to))) break;
        db.set(to, from);
        gone(key, `deleted (renamed to ${to})`);
        break;
      }
      case 'expire':
      case 'pexpire':
      case 'expireat':
      case 'pexpireat': {
        const f = live(key);
        if (f?.kind !== 'string') break;
        const t = n(1);
        if (!Number.isFinite(t)) break;
        if (name === 'expireat' || name === 'pexpireat') {
          f.expiresAt = name === 'expireat' ? t * 1000 : t;
          f.relative = false;
        } else {
          f.expiresAt = relativeDeadline(name === 'expire' ? t * 1000 : t);
          f.relative = true;
        }
        break;
      }
      case 'persist': {
        const f = live(key);
        if (f?.kind === 'string') {
          f.expiresAt = undefined;
          f.relative = false;
        }
        break;
      }
      case 'flushdb':
        for (const k of db.keys()) gone(k, 'deleted');
        break;
      case 'flushall':
        for (const d of dbs.values()) for (const k of d.keys()) d.set(k, { kind: 'gone', why: 'deleted' });
        break;
      default:
        if (TYPE_OF[name]) {
          // On a live string key the command failed (WRONGTYPE); nedis logs it all the same.
          if (live(key)?.kind !== 'string') db.set(key, { kind: 'other', type: TYPE_OF[name] });
        } else if (!NO_EFFECT.has(name)) {
          unknown.set(name, (unknown.get(name) ?? 0) + 1);
        }
    }
  }

  const chosen = opts.db ?? 0;
  const keys = new Map<string, KeyFate>();
  for (const [k, f] of dbOf(chosen)) {
    keys.set(k, f.kind === 'string' && certainlyExpired(f, now) ? { kind: 'gone', why: 'expired' } : f);
  }
  const otherDatabases = new Map<string, number>();
  for (const [i, d] of dbs) {
    if (i === chosen) continue;
    for (const [k, f] of d) {
      if (f.kind === 'gone' || (f.kind === 'string' && certainlyExpired(f, now))) continue;
      if (!otherDatabases.has(k)) otherDatabases.set(k, i);
    }
  }
  return { keys, otherDatabases, commands, unknown, truncatedBytes: data.length - at };
}

/**
 * True when a key's lifetime has ended for certain: an absolute time before now, or a relative
 * one that ended before now even counted from the latest moment it can have been written.
 */
function certainlyExpired(f: Extract<KeyFate, { kind: 'string' }>, now: number): boolean {
  return f.expiresAt !== undefined && f.expiresAt <= now;
}
