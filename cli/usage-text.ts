/**
 * What `rendezvous identities usage` and `identities limits` print as text: usage per protocol for
 * today and this month, the last 30 days as a sparkline and a small table, the month's listing
 * by bytes, and an identity's limits. Pure functions of the store's records (tested directly).
 */
import type { IdentityUsage, UsageRankEntry } from '../server/store/index.js';
import { formatBytes } from '../server/usage-format.js';
import {
  type IdentityLimits,
  totalBytes,
  type UsageCounters,
  type UsageProtocol,
  type UsageTotals,
} from '../server/usage-types.js';

const PROTOCOLS: UsageProtocol[] = ['generic', 'http'];

/** Left-aligned columns, two spaces apart (the first row is the header). */
export function columns(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** Seconds for people: `45s`, `5m 12s`, `3h 4m`, `2d 1h`. */
export function formatSeconds(total: number): string {
  const s = Math.round(total);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`;
}

const BARS = '▁▂▃▄▅▆▇█';

/** One character per value, the highest `█`; a zero is a space (no use that day), any use at least `▁`. */
export function sparkline(values: number[]): string {
  const max = Math.max(0, ...values);
  return values
    .map((v) => (v <= 0 || max === 0 ? ' ' : BARS[Math.min(7, Math.floor((v / max) * 7.999))]))
    .join('');
}

/** Both protocols added up. */
function sumCounters(t: UsageTotals): UsageCounters {
  const out: UsageCounters = { bytesToHidden: 0, bytesToMobile: 0, rendezvous: 0, connectionSeconds: 0 };
  for (const p of PROTOCOLS) for (const k of Object.keys(out) as (keyof UsageCounters)[]) out[k] += t[p][k];
  return out;
}

/** The cells of one row of counters. */
const counterCells = (c: UsageCounters) => [
  formatBytes(c.bytesToHidden + c.bytesToMobile),
  formatBytes(c.bytesToHidden),
  formatBytes(c.bytesToMobile),
  String(c.rendezvous),
  formatSeconds(c.connectionSeconds),
];

const COUNTER_HEADER = ['BYTES', 'TO HIDDEN', 'TO MOBILE', 'RENDEZVOUS', 'CONNECTED'];

/** `identities usage <uuid>`: today and this month per protocol, then the last 30 days. */
export function usageText(uuid: string, u: IdentityUsage, note?: string): string {
  const rows = [['', '', ...COUNTER_HEADER]];
  for (const [name, t] of [
    ['today', u.today],
    ['this month', u.month],
  ] as const) {
    for (const p of PROTOCOLS) rows.push([name, p, ...counterCells(t[p])]);
    rows.push([name, 'total', ...counterCells(sumCounters(t))]);
  }
  const bytes = u.days.map((d) => totalBytes(d.totals));
  const first = u.days[0]?.day ?? '';
  const last = u.days[u.days.length - 1]?.day ?? '';
  const used = u.days.filter((d) => totalBytes(d.totals) > 0 || sumCounters(d.totals).rendezvous > 0);
  const lines = [
    `uuid  ${uuid}${note ? `  (${note})` : ''}`,
    '',
    columns(rows),
    '',
    `last 30 days (UTC), bytes a day, ${first} … ${last}, highest ${formatBytes(Math.max(0, ...bytes))}:`,
    `  |${sparkline(bytes)}|`,
  ];
  if (used.length) {
    lines.push('');
    lines.push(
      columns([
        ['DAY', ...COUNTER_HEADER],
        ...used.map((d) => [d.day, ...counterCells(sumCounters(d.totals))]),
      ]),
    );
  }
  return lines.join('\n');
}

/** `identities usage [--month]`: every identity with usage in the month, largest first. */
export function rankingText(month: string, ranking: UsageRankEntry[]): string {
  if (ranking.length === 0) return `no usage in ${month}`;
  const rows = ranking.map((r) => [r.uuid, ...counterCells(sumCounters(r.month))]);
  const total = ranking.reduce((n, r) => n + totalBytes(r.month), 0);
  return `${columns([['UUID', ...COUNTER_HEADER], ...rows])}\n\n${ranking.length} ${ranking.length === 1 ? 'identity' : 'identities'} used ${formatBytes(total)} in ${month} (UTC)`;
}

/** `identities limits <uuid>`: each limit, or none, and the month's use against the quota. */
export function limitsText(uuid: string, limits: IdentityLimits | undefined, monthBytes: number): string {
  const l = limits ?? {};
  const quota =
    l.monthlyBytes === undefined
      ? `none (${formatBytes(monthBytes)} used this month)`
      : `${formatBytes(l.monthlyBytes)} a month (${formatBytes(monthBytes)} used this month, ${Math.floor(
          (monthBytes / l.monthlyBytes) * 100,
        )} %)`;
  return [
    `uuid            ${uuid}`,
    `quota           ${quota}`,
    `bandwidth       ${l.bytesPerSecond === undefined ? 'none' : `${formatBytes(l.bytesPerSecond)}/s`}`,
    `max concurrent  ${l.maxConcurrent === undefined ? "none (each relay's own cap per hidden server applies)" : l.maxConcurrent}`,
  ].join('\n');
}
