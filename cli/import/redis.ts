/**
 * Reading the original's identity records straight from its redis (`rendezvous import --redis`):
 * a minimal RESP2 client over one TCP connection that SCANs (or, without SCAN, KEYS) every key
 * and GETs it. Read-only (SCAN or KEYS, GET, TYPE, and AUTH/SELECT when asked); the password
 * comes from `REDISCLI_AUTH`, as for `redis-cli`, never from argv.
 */
import { connect, type Socket } from 'node:net';
import { type ImportSkip, MAX_IMPORT_BYTES } from './import.js';

/** A RESP2 value. */
type Resp = string | number | null | Error | Resp[];

/** Longest wait for one answer from redis. */
export const REDIS_REPLY_TIMEOUT_MS = 10_000;

/** Parses one RESP value at `at`; undefined when the buffer does not hold all of it yet. */
function parseResp(buf: Buffer, at: number): { value: Resp; next: number } | undefined {
  const eol = buf.indexOf('\r\n', at);
  if (eol === -1) return undefined;
  const kind = String.fromCharCode(buf[at] as number);
  const line = buf.toString('utf8', at + 1, eol);
  switch (kind) {
    case '+':
      return { value: line, next: eol + 2 };
    case '-':
      return { value: new Error(line), next: eol + 2 };
    case ':':
      return { value: Number(line), next: eol + 2 };
    case '$': {
      const len = Number(line);
      if (len < 0) return { value: null, next: eol + 2 };
      if (len > MAX_IMPORT_BYTES) throw new Error('redis value too large');
      if (buf.length < eol + 2 + len + 2) return undefined;
      return { value: buf.toString('utf8', eol + 2, eol + 2 + len), next: eol + 2 + len + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return { value: null, next: eol + 2 };
      const items: Resp[] = [];
      let next = eol + 2;
      for (let i = 0; i < n; i++) {
        const item = parseResp(buf, next);
        if (!item) return undefined;
        items.push(item.value);
        next = item.next;
      }
      return { value: items, next };
    }
    default:
      throw new Error('not a redis server (unexpected reply)');
  }
}

function encodeCommand(args: string[]): Buffer {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) parts.push(`$${Buffer.byteLength(a)}\r\n${a}\r\n`);
  return Buffer.from(parts.join(''));
}

/** One connection, one command at a time. */
class RedisConnection {
  private buf: Buffer = Buffer.alloc(0);
  private waiting?: { resolve: (v: Resp) => void; reject: (e: Error) => void };
  private failed?: Error;

  constructor(private readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
      this.drain();
    });
    const fail = (err: Error) => {
      this.failed ??= err;
      this.waiting?.reject(err);
      this.waiting = undefined;
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('redis closed the connection')));
  }

  private drain(): void {
    if (!this.waiting) return;
    let parsed: ReturnType<typeof parseResp>;
    try {
      parsed = parseResp(this.buf, 0);
    } catch (err) {
      this.waiting.reject(err as Error);
      this.waiting = undefined;
      this.socket.destroy();
      return;
    }
    if (!parsed) return;
    this.buf = this.buf.subarray(parsed.next);
    const w = this.waiting;
    this.waiting = undefined;
    w.resolve(parsed.value);
  }

  /** Sends a command and resolves with its reply (a redis error reply resolves as an Error value). */
  send(args: string[]): Promise<Resp> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting = undefined;
        this.socket.destroy();
        reject(new Error('redis did not answer in time'));
      }, REDIS_REPLY_TIMEOUT_MS);
      this.waiting = {
        resolve: (v) => {
          clearTimeout(t);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      };
      this.socket.write(encodeCommand(args));
      this.drain();
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Where to read: `redis://host[:port][/db]` (a password in the URL is refused: use REDISCLI_AUTH). */
export function parseRedisUrl(url: string): { host: string; port: number; db: number } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error('--redis takes redis://host[:port][/db]');
  }
  if (u.protocol !== 'redis:') throw new Error('--redis takes redis://host[:port][/db] (no TLS)');
  if (u.password)
    throw new Error('put the redis password in REDISCLI_AUTH, not in the URL (argv is visible)');
  const db = u.pathname && u.pathname !== '/' ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new Error('the redis database must be a number');
  return { host: u.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1', port: Number(u.port || 6379), db };
}

/** What a redis database holds for an import: string values by key, and the other keys' fates. */
export interface RedisContents {
  /** Every string key and its value. */
  records: Record<string, string>;
  /** Keys that hold no string: their type (a hash, a list …), or that they vanished meanwhile. */
  skipped: ImportSkip[];
  /** Lines for the operator about the read as a whole (the KEYS fall-back). */
  warnings: string[];
}

/** True for the answer of a server that lacks a command (nedis, redis before 2.8, a renamed SCAN). */
const isUnknownCommand = (v: Resp) => v instanceof Error && /unknown command/i.test(v.message);

/**
 * Every string key of a redis database and its value; keys of other types are named with their
 * type. Keys are listed with SCAN, or with one KEYS * where the server has no SCAN (the
 * original's nedis; a renamed SCAN), which blocks a busy redis for its length, hence the warning.
 */
export async function readRedis(
  url: string,
  password: string | undefined = process.env.REDISCLI_AUTH,
): Promise<RedisContents> {
  const { host, port, db } = parseRedisUrl(url);
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect({ host, port }, () => resolve(s));
    s.once('error', reject);
    s.setTimeout(REDIS_REPLY_TIMEOUT_MS, () => s.destroy(new Error('redis connection timed out')));
  });
  const conn = new RedisConnection(socket);
  const check = (v: Resp, what: string): Resp => {
    // Redis error texts name the command, never the value we sent.
    if (v instanceof Error) throw new Error(`redis refused ${what}: ${v.message.slice(0, 200)}`);
    return v;
  };
  const out: RedisContents = { records: {}, skipped: [], warnings: [] };
  let size = 0;
  const readKey = async (key: Resp) => {
    if (typeof key !== 'string' || key in out.records) return;
    const value = await conn.send(['GET', key]);
    if (value === null) {
      // Listed, then gone before it was read: expired or deleted meanwhile.
      out.skipped.push({ key, reason: 'gone before it was read (expired or deleted)', problem: false });
      return;
    }
    if (value instanceof Error) {
      // WRONGTYPE: a list, hash… — not an identity record.
      const type = await conn.send(['TYPE', key]);
      out.skipped.push({
        key,
        reason: `not a string (${typeof type === 'string' ? type : 'another type'})`,
        problem: false,
      });
      return;
    }
    if (typeof value !== 'string') throw new Error('unexpected GET reply');
    size += value.length + key.length;
    if (size > MAX_IMPORT_BYTES) throw new Error(`the database holds more than ${MAX_IMPORT_BYTES} bytes`);
    out.records[key] = value;
  };
  try {
    if (password) check(await conn.send(['AUTH', password]), 'AUTH');
    if (db) check(await conn.send(['SELECT', String(db)]), 'SELECT');
    let cursor = '0';
    do {
      const reply = await conn.send(['SCAN', cursor, 'COUNT', '500']);
      if (cursor === '0' && isUnknownCommand(reply)) {
        out.warnings.push(
          'this server has no SCAN (nedis, or an old or restricted redis): listing the keys with one KEYS * instead',
        );
        const keys = check(await conn.send(['KEYS', '*']), 'KEYS');
        if (!Array.isArray(keys)) throw new Error('unexpected KEYS reply');
        for (const key of keys) await readKey(key);
        break;
      }
      check(reply, 'SCAN');
      if (!Array.isArray(reply) || typeof reply[0] !== 'string' || !Array.isArray(reply[1])) {
        throw new Error('unexpected SCAN reply');
      }
      cursor = reply[0];
      for (const key of reply[1]) await readKey(key);
    } while (cursor !== '0');
    return out;
  } finally {
    conn.close();
  }
}
