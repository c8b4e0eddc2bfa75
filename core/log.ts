/**
 * The one structured log schema of the relay, the API handlers, the agent and the CLI.
 *
 * Every record is one JSON object (or, for people, one text line) with these keys:
 *
 *   time     ISO 8601, UTC (`2026-12-01T04:21:05.123Z`)
 *   level    INFO | WARN | ERROR
 *   service  relay | api | agent | connect | cli | admin | local
 *   msg      what happened, in words (`rendezvous ended`, `refused`)
 *   event    what kind of record it is, for queries (`rendezvous`, `refusal`, `park`, …), optional
 *   rid      the rendezvous's correlation id: the relay that paired it, the peer relay and the agent
 *            all log the same one
 *   …        the event's own fields (see EVENT_FIELDS in docs: protocol, uuid, source, reason, …)
 *
 * Never a secret, a TOTP code or a cookie: fields whose names say they hold one are replaced by
 * "[redacted]" here, as a last line of defence behind the callers' own care.
 */

import { printable, printableJson } from './printable.js';

/** Fields attached to a log record. Never put a secret, code or cookie here. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** What the relay, the API, the agent and the local stack log through. */
export interface Log {
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

/** A log record as written (JSON form). */
export interface LogRecord {
  time: string;
  level: 'INFO' | 'WARN' | 'ERROR';
  service: string;
  msg: string;
  [field: string]: string | number | boolean | undefined;
}

/** Field names that may only ever carry "[redacted]". */
export const REDACTED_FIELD = /secret|cookie|response|totp|otp|token|password|authori[sz]ation|passcode/i;

/** Drops everything (tests, libraries without a logger). */
export const silentLog: Log = { info() {}, warn() {}, error() {} };

// Field names are few and repeat on every record: the redaction verdict is kept per name (bounded,
// so names made from input cannot grow it without end).
const redactedNames = new Map<string, boolean>();
function redacted(name: string): boolean {
  let r = redactedNames.get(name);
  if (r === undefined) {
    r = REDACTED_FIELD.test(name);
    if (redactedNames.size < 1_000) redactedNames.set(name, r);
  }
  return r;
}

/** The record for one call: schema keys first, redacted fields replaced, undefined dropped. */
export function makeRecord(
  level: LogRecord['level'],
  service: string,
  msg: string,
  fields: LogFields = {},
  now: Date = new Date(),
): LogRecord {
  const record: LogRecord = { time: now.toISOString(), level, service, msg };
  for (const k in fields) {
    const v = fields[k];
    if (v === undefined || k === 'time' || k === 'level' || k === 'service' || k === 'msg') continue;
    record[k] = redacted(k) ? '[redacted]' : v;
  }
  return record;
}

/** Where `jsonLog` writes its lines: a stream, or an asynchronous sink (the relay's stdout). */
export interface LineSink {
  write(line: string): unknown;
}

/** One JSON object per line (stdout by default): what CloudWatch Logs Insights and `jq` read best. */
export function jsonLog(service: string, out: LineSink = process.stdout): Log {
  const line = (level: LogRecord['level']) => (msg: string, fields?: LogFields) => {
    // JSON escapes C0 itself; C1 and the bidi overrides, which a terminal may act on, too.
    out.write(`${printableJson(makeRecord(level, service, msg, fields))}\n`);
  };
  return { info: line('INFO'), warn: line('WARN'), error: line('ERROR') };
}

/**
 * The same records as human-readable lines on stderr, for the CLI (`expose` shows what it is
 * doing): `expose: 04:21:05Z rendezvous ended rid=… bytesIn=…`. The time is UTC.
 */
export function textLog(prefix: string, out: NodeJS.WritableStream = process.stderr): Log {
  const line = (level: LogRecord['level']) => (msg: string, fields?: LogFields) => {
    const {
      time,
      level: _l,
      service: _s,
      msg: _m,
      event: _e,
      ...rest
    } = makeRecord(level, prefix, msg, fields);
    const extra = Object.entries(rest)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
    // Fields carry input (a server's diagnostic, a peer's line): one record stays one line.
    out.write(
      `${prefix}: ${time.slice(11, 19)}Z ${level === 'INFO' ? '' : `${level.toLowerCase()}: `}${printable(`${msg}${extra ? ` ${extra}` : ''}`)}\n`,
    );
  };
  return { info: line('INFO'), warn: line('WARN'), error: line('ERROR') };
}

/** `jsonLog` or `textLog` by name (the CLI's `--log-format`). */
export function logFor(format: 'json' | 'text', service: string, out?: NodeJS.WritableStream): Log {
  return format === 'json'
    ? jsonLog(service, out ?? process.stdout)
    : textLog(service, out ?? process.stderr);
}

/** A log whose records all carry `fields` as well (a relay's id, a uuid). */
export function withFields(log: Log, fields: LogFields): Log {
  return {
    info: (msg, f) => log.info(msg, { ...fields, ...f }),
    warn: (msg, f) => log.warn(msg, { ...fields, ...f }),
    error: (msg, f) => log.error(msg, { ...fields, ...f }),
  };
}

/** Collects records in memory (tests assert exact records through it). */
export function memoryLog(service: string, records: LogRecord[] = []): Log & { records: LogRecord[] } {
  const line = (level: LogRecord['level']) => (msg: string, fields?: LogFields) => {
    records.push(makeRecord(level, service, msg, fields));
  };
  return { info: line('INFO'), warn: line('WARN'), error: line('ERROR'), records };
}

/**
 * Bounds how many records of one kind (a refusal reason, a source) reach the log, so a flood
 * cannot fill the disk: up to `perWindow` records per key per window, then silence; the first
 * record of the next window carries `suppressed`, the number dropped in between. Metrics still
 * count every event; only the log is bounded.
 */
export class LogBudget {
  private readonly windows = new Map<string, { start: number; used: number; suppressed: number }>();

  constructor(
    private readonly perWindow = 20,
    private readonly windowMs = 60_000,
    private readonly maxKeys = 1_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether a record of `key` may be written now; if so, how many were suppressed before it. */
  take(key: string): { ok: true; suppressed: number } | { ok: false } {
    const t = this.now();
    let w = this.windows.get(key);
    if (!w || t - w.start >= this.windowMs) {
      const suppressed = w?.suppressed ?? 0;
      // A flood of distinct keys (sources) is bounded too: past maxKeys the oldest window goes.
      if (!w && this.windows.size >= this.maxKeys) {
        const oldest = this.windows.keys().next().value;
        if (oldest !== undefined) this.windows.delete(oldest);
      }
      this.windows.delete(key);
      w = { start: t, used: 0, suppressed: 0 };
      this.windows.set(key, w);
      w.used = 1;
      return { ok: true, suppressed };
    }
    if (w.used < this.perWindow) {
      w.used++;
      const suppressed = w.suppressed;
      w.suppressed = 0;
      return { ok: true, suppressed };
    }
    w.suppressed++;
    return { ok: false };
  }
}

/** Log records per reason and source address per minute, then `suppressed=N` on the next one. */
export const REFUSAL_LOGS_PER_SOURCE = 20;
/** Log records per reason per minute from all sources together (a spread flood stays bounded too). */
export const REFUSAL_LOGS_PER_REASON = 100;

/**
 * Two budgets in a row: one per reason and source (one noisy address cannot hide another's
 * records), then one per reason (ten thousand addresses cannot fill the log either). A record
 * that passes reports how many of its kind were dropped before it.
 */
export class RefusalLogGate {
  private readonly bySource: LogBudget;
  private readonly byReason: LogBudget;
  /** Per reason: records a full reason budget dropped after their source's budget let them by. */
  private readonly carried = new Map<string, number>();

  constructor(
    perSource: number | LogBudget = REFUSAL_LOGS_PER_SOURCE,
    perReason: number | LogBudget = REFUSAL_LOGS_PER_REASON,
    now: () => number = Date.now,
  ) {
    this.bySource = typeof perSource === 'number' ? new LogBudget(perSource, 60_000, 1_000, now) : perSource;
    this.byReason = typeof perReason === 'number' ? new LogBudget(perReason, 60_000, 100, now) : perReason;
  }

  /** Whether a record of `reason` from `source` may be written; if so, how many were dropped before it. */
  take(reason: string, source: string): { ok: true; suppressed: number } | { ok: false } {
    const s = this.bySource.take(`${reason}|${source}`);
    if (!s.ok) return s;
    const r = this.byReason.take(reason);
    if (!r.ok) {
      // The reason budget counted this record; what the source budget held for it moves here.
      this.carried.set(reason, (this.carried.get(reason) ?? 0) + s.suppressed);
      return r;
    }
    const carried = this.carried.get(reason) ?? 0;
    this.carried.delete(reason);
    return { ok: true, suppressed: s.suppressed + r.suppressed + carried };
  }
}
