/** A minimal structured logger interface, so the relay, agent and CLI share one shape. */

/** Fields attached to a log line. Never put a secret, code or cookie here. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** What the relay, the agent and the local stack log through. */
export interface Log {
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

/** Drops everything (tests, libraries without a logger). */
export const silentLog: Log = { info() {}, warn() {}, error() {} };

/** One JSON object per line on stdout: what CloudWatch and `jq` read best. */
export function jsonLog(service: string, out: NodeJS.WritableStream = process.stdout): Log {
  const line =
    (level: string) =>
    (msg: string, fields: LogFields = {}) => {
      out.write(`${JSON.stringify({ time: new Date().toISOString(), level, service, msg, ...fields })}\n`);
    };
  return { info: line('INFO'), warn: line('WARN'), error: line('ERROR') };
}

/** Human-readable lines on stderr, for the CLI (`expose` shows what it is doing). */
export function textLog(prefix: string, out: NodeJS.WritableStream = process.stderr): Log {
  const line =
    (level: string) =>
    (msg: string, fields: LogFields = {}) => {
      const extra = Object.entries(fields)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      out.write(
        `${prefix}: ${level === 'INFO' ? '' : `${level.toLowerCase()}: `}${msg}${extra ? ` ${extra}` : ''}\n`,
      );
    };
  return { info: line('INFO'), warn: line('WARN'), error: line('ERROR') };
}
