/**
 * Sizes, rates and limits as an operator types and reads them (the CLI's `identities usage` and
 * `identities limits`, the console): `10GB`, `512MiB`, `1MB/s`, `none`. Decimal units are powers
 * of 1000 (kB/KB, MB, GB, TB, PB), binary ones of 1024 (KiB, MiB, GiB, TiB, PiB); units are read
 * without regard to case and may follow the number after a space. What `formatBytes` prints,
 * `parseBytes` reads back (to three significant digits).
 */
import { badRequest } from '../core/errors.js';
import type { IdentityLimits } from './usage-types.js';

const UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  pb: 1e15,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
  pib: 2 ** 50,
};

const SIZE = /^(\d+(?:\.\d+)?)\s*([kmgtp]i?b|b)?$/i;

/** Input quoted in an error: bounded, so a pasted novel does not come back whole. */
const quoted = (text: string) => JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);

/** Bytes from `10GB`, `512MiB`, `1.5TB`, `1000` (no unit: bytes); BAD_REQUEST for anything else. */
export function parseBytes(text: string): number {
  const m = SIZE.exec(String(text).trim());
  const bytes = m ? Number(m[1]) * (UNITS[(m[2] ?? 'b').toLowerCase()] as number) : Number.NaN;
  // A fraction of a byte is not a size (1.5 without a unit); with a unit it is rounded.
  if (!m || !Number.isSafeInteger(Math.round(bytes)) || (!m[2] && m[1]?.includes('.')))
    throw badRequest(`not a size in bytes: ${quoted(String(text))} (e.g. 10GB, 512MiB, 1000)`);
  return Math.round(bytes);
}

/** Bytes per second from `1MB/s`, `800KiB/s`, `2000` (bytes/s); BAD_REQUEST for anything else. */
export function parseRate(text: string): number {
  const rate = String(text)
    .trim()
    .replace(/\s*\/\s*s$/i, '');
  try {
    return parseBytes(rate);
  } catch {
    throw badRequest(`not a rate in bytes per second: ${quoted(String(text))} (e.g. 1MB/s, 800KiB/s, 2000)`);
  }
}

/** A byte count for people: `999 B`, `1.5 kB`… `12.3 GB` (decimal units, three significant digits). */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Math.abs(n) < 1000) return `${Math.round(n)} B`;
  const units = ['kB', 'MB', 'GB', 'TB', 'PB', 'EB'];
  let k = 0;
  let v = n / 1000;
  // 999.95 kB prints as 1 MB, not 1000 kB.
  while (Math.abs(v) >= 999.5 && k < units.length - 1) {
    v /= 1000;
    k++;
  }
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return `${Number(v.toFixed(digits))} ${units[k]}`;
}

/** A limit as an operator gives it: a value, `none`/`off` (clear it), or absent/empty (keep it). */
export type LimitInput = string | number | undefined;

/** The limit options of the CLI (`--quota`, `--bandwidth`, `--max-concurrent`) and the console's form. */
export interface LimitOptions {
  quota?: LimitInput;
  bandwidth?: LimitInput;
  maxConcurrent?: LimitInput;
}

/** A change to an identity's limits: a number sets a field, null clears it, absent keeps it. */
export type LimitsChange = { [K in keyof IdentityLimits]?: number | null };

const CLEAR = /^(none|off)$/i;

/**
 * Reads the operator's limit options: `--quota 10GB|none`, `--bandwidth 1MB/s|none`,
 * `--max-concurrent N|none`. BAD_REQUEST naming the option for a bad value; the store checks
 * the ranges again (store/identities.ts `checkLimits`: a bandwidth of at least 1 KiB/s).
 */
export function parseLimits(opts: LimitOptions): LimitsChange {
  const change: LimitsChange = {};
  const one = (
    name: string,
    field: keyof IdentityLimits,
    value: LimitInput,
    parse: (text: string) => number,
  ) => {
    if (value === undefined || String(value).trim() === '') return;
    const text = String(value).trim();
    if (CLEAR.test(text)) {
      change[field] = null;
      return;
    }
    try {
      change[field] = parse(text);
    } catch (err) {
      throw badRequest(`${name}: ${(err as Error).message}, or none`);
    }
  };
  one('quota', 'monthlyBytes', opts.quota, (t) => positive(parseBytes(t), t, 'a size'));
  one('bandwidth', 'bytesPerSecond', opts.bandwidth, (t) => positive(parseRate(t), t, 'a rate'));
  one('max-concurrent', 'maxConcurrent', opts.maxConcurrent, (t) => {
    if (!/^\d+$/.test(t)) throw badRequest(`not a whole number: ${quoted(t)}`);
    return positive(Number(t), t, 'a number');
  });
  return change;
}

/** `n` when above zero; BAD_REQUEST otherwise (0 is no limit's business: `none` clears one). */
function positive(n: number, text: string, what: string): number {
  if (n <= 0) throw badRequest(`${what} above zero is required, not ${quoted(text)}`);
  return n;
}

/** `current` with `change` applied: undefined when no limit is left. */
export function applyLimits(
  current: IdentityLimits | undefined,
  change: LimitsChange,
): IdentityLimits | undefined {
  const out: IdentityLimits = { ...current };
  for (const [k, v] of Object.entries(change) as [keyof IdentityLimits, number | null | undefined][]) {
    if (v === null) delete out[k];
    else if (v !== undefined) out[k] = v;
  }
  return Object.keys(out).length ? out : undefined;
}
