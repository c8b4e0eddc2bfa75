/**
 * The console's usage and limits of one identity (issue 30): what `GET /api/identities/<uuid>/usage`
 * returns, and the page `GET /identities/<uuid>/usage` renders from it — today and this UTC month
 * per protocol (bytes each way, rendezvous, connection-seconds), a chart of the last 30 UTC days
 * (inline SVG, no script or asset: the console works offline), and the identity's limits with the
 * form that sets or clears them. Also the month column of the list (bytes, and a quota bar when a
 * quota is set). Every value is escaped; the form carries the session's CSRF token.
 */
import escapeHtml from 'escape-html';
import { badRequest } from '../core/errors.js';
import type { Store } from '../server/store/index.js';
import type { IdentityUsage } from '../server/store/usage.js';
import { formatBytes, parseLimits } from '../server/usage-format.js';
import {
  type IdentityLimits,
  totalBytes,
  type UsageCounters,
  type UsageProtocol,
  type UsageTotals,
} from '../server/usage-types.js';
import { type UtcTime, utc } from './rows.js';

/** One identity's usage and limits, as the JSON view returns them (bytes are exact counts). */
export interface UsageView extends IdentityUsage {
  uuid: string;
  label?: string;
  /** When the figures were read. */
  at: UtcTime;
  /** The limits set on the identity (`{}`: none). */
  limits: IdentityLimits;
  /** Bytes both ways over both protocols this UTC month: what a quota counts. */
  monthBytes: number;
  /** Bytes both ways over both protocols today (UTC). */
  todayBytes: number;
}

/** Reads one identity's usage and limits; undefined for an unknown uuid. */
export async function usageView(
  store: Store,
  uuid: string,
  nowMs = Date.now(),
): Promise<UsageView | undefined> {
  const [id, usage] = await Promise.all([store.getIdentity(uuid), store.usageOf(uuid, nowMs)]);
  if (!id) return undefined;
  return {
    uuid: id.uuid,
    label: id.label,
    at: utc(nowMs),
    limits: { ...id.limits },
    monthBytes: totalBytes(usage.month),
    todayBytes: totalBytes(usage.today),
    ...usage,
  };
}

/** The names of the form's fields, as `parseLimits` and the CLI's options call them. */
type LimitField = 'quota' | 'bandwidth' | 'max-concurrent';

/**
 * The limits a posted form asks for. Every field is posted, so the form states the whole set: an
 * empty field (or `none`/`off`) is no limit, and `clear` clears them all. Throws BAD_REQUEST
 * (parseLimits' message) on a value it cannot read.
 */
export function limitsFromForm(form: URLSearchParams): IdentityLimits {
  if (form.get('clear')) return {};
  const value = (f: LimitField) => {
    const v = (form.get(f) ?? '').trim();
    if (v.length > 100) throw badRequest(`${f}: value too long`);
    // Empty is no limit here (parseLimits keeps a field it is not given: the CLI's meaning).
    return v || 'none';
  };
  const parsed = parseLimits({
    quota: value('quota'),
    bandwidth: value('bandwidth'),
    maxConcurrent: value('max-concurrent'),
  });
  // Only the fields this form owns, and only set ones: `{}` clears.
  const out: IdentityLimits = {};
  if (parsed.monthlyBytes !== undefined && parsed.monthlyBytes !== null)
    out.monthlyBytes = parsed.monthlyBytes;
  if (parsed.bytesPerSecond !== undefined && parsed.bytesPerSecond !== null)
    out.bytesPerSecond = parsed.bytesPerSecond;
  if (parsed.maxConcurrent !== undefined && parsed.maxConcurrent !== null)
    out.maxConcurrent = parsed.maxConcurrent;
  return out;
}

/** The store's range refusals name its fields (`bytesPerSecond: …`); the page names the form's. */
export function formMessage(message: string): string {
  return message
    .replace(/^monthlyBytes:/, 'quota:')
    .replace(/^bytesPerSecond:/, 'bandwidth:')
    .replace(/^maxConcurrent:/, 'max-concurrent:');
}

/** Escapes any value for HTML text or a quoted attribute (absent: empty). */
const e = (s: unknown): string => escapeHtml(String(s ?? ''));

/** Bytes in the largest unit that states them exactly (`10GB`, `512MiB`), else plain: a form value that reads back the same. */
export function exactBytes(n: number): string {
  for (const [unit, size] of [
    ['TB', 1e12],
    ['TiB', 1024 ** 4],
    ['GB', 1e9],
    ['GiB', 1024 ** 3],
    ['MB', 1e6],
    ['MiB', 1024 ** 2],
    ['kB', 1e3],
    ['KiB', 1024],
  ] as const)
    if (n >= size && n % size === 0) return `${n / size}${unit}`;
  return String(n);
}

/** Seconds in words (exact below two minutes). */
function seconds(s: number): string {
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** Bytes in a unit, with the exact count in a data attribute (what the tests and scripts read). */
const byteCell = (n: number, cls: string) =>
  `<td class="${cls}" data-bytes="${n}" title="${n} bytes">${e(formatBytes(n))}</td>`;

const PROTOCOLS: [UsageProtocol, string][] = [
  ['generic', 'generic'],
  ['http', 'HTTP'],
];

/** A table of one period's usage: a row per protocol and their total. */
function totalsTable(id: string, caption: string, t: UsageTotals): string {
  const row = (name: string, key: string, c: UsageCounters) =>
    `<tr data-protocol="${key}"><th scope="row">${name}</th>${byteCell(c.bytesToHidden, 'to-hidden')}${byteCell(
      c.bytesToMobile,
      'to-mobile',
    )}<td class="rendezvous" data-count="${c.rendezvous}">${c.rendezvous}</td><td class="seconds" data-seconds="${
      c.connectionSeconds
    }">${e(seconds(c.connectionSeconds))}</td></tr>`;
  const sum: UsageCounters = {
    bytesToHidden: t.generic.bytesToHidden + t.http.bytesToHidden,
    bytesToMobile: t.generic.bytesToMobile + t.http.bytesToMobile,
    rendezvous: t.generic.rendezvous + t.http.rendezvous,
    connectionSeconds: t.generic.connectionSeconds + t.http.connectionSeconds,
  };
  return `<table class="usage" id="${id}"><caption>${e(caption)}: <strong class="total" data-bytes="${totalBytes(
    t,
  )}">${e(formatBytes(totalBytes(t)))}</strong></caption>
<thead><tr><th></th><th>→ hidden</th><th>→ mobile</th><th>Rendezvous</th><th>Connected</th></tr></thead>
<tbody>${PROTOCOLS.map(([k, name]) => row(name, k, t[k])).join('')}${row('both', 'total', sum)}</tbody></table>`;
}

const CHART_W = 300;
const CHART_H = 64;

/**
 * The last 30 days' bytes (both ways, both protocols) as bars, oldest left. Accessible: the SVG is
 * an image whose label states the period, total and busiest day; each bar's title its day and bytes.
 */
export function dayChart(days: IdentityUsage['days']): string {
  const values = days.map((d) => totalBytes(d.totals));
  const max = Math.max(0, ...values);
  const sum = values.reduce((a, b) => a + b, 0);
  const busiest = days[values.indexOf(max)];
  const w = CHART_W / Math.max(days.length, 1);
  const first = days[0]?.day ?? '';
  const last = days[days.length - 1]?.day ?? '';
  const label = `Bytes per UTC day, ${first} to ${last}: ${formatBytes(sum)} in all${
    max > 0 && busiest ? `, most on ${busiest.day} (${formatBytes(max)})` : ''
  }`;
  const bars = days
    .map((d, i) => {
      const v = values[i] as number;
      // A day with any traffic gets at least one pixel, so it is told from a day without.
      const h = max > 0 ? (v > 0 ? Math.max(1, Math.round((v / max) * (CHART_H - 4))) : 0) : 0;
      return `<rect class="bar" data-day="${e(d.day)}" data-bytes="${v}" x="${(i * w + 1).toFixed(1)}" y="${
        CHART_H - h
      }" width="${(w - 2).toFixed(1)}" height="${h}"><title>${e(d.day)}: ${e(formatBytes(v))}</title></rect>`;
    })
    .join('');
  return `<svg class="chart" id="days" role="img" aria-label="${e(label)}" viewBox="0 0 ${CHART_W} ${CHART_H}" width="${CHART_W * 2}" height="${CHART_H * 2}" xmlns="http://www.w3.org/2000/svg"><title>${e(
    label,
  )}</title><line x1="0" y1="${CHART_H - 0.5}" x2="${CHART_W}" y2="${CHART_H - 0.5}" stroke="#b9c0cc" stroke-width="1"/>${bars}</svg>`;
}

/**
 * The month column of the list: bytes this month, and a bar of the quota when one is set (the
 * browser colours it amber from 80 % and red from 95 %; over the quota it says so in words).
 */
export function monthCell(monthBytes: number, limits?: IdentityLimits): string {
  const quota = limits?.monthlyBytes;
  const used = `<span class="month-bytes" data-bytes="${monthBytes}">${e(formatBytes(monthBytes))}</span>`;
  if (!quota) return used;
  const over = monthBytes >= quota;
  const pct = Math.min(100, Math.floor((monthBytes / quota) * 100));
  const words = over ? `over the ${formatBytes(quota)} quota` : `${pct} % of ${formatBytes(quota)}`;
  return `${used}<br><meter class="quota${over ? ' over' : ''}" min="0" max="${quota}" low="${Math.floor(
    quota * 0.8,
  )}" high="${Math.floor(quota * 0.95)}" optimum="0" value="${Math.min(monthBytes, quota)}" title="${e(words)}">${pct} %</meter> <span class="quota-text ${
    over ? 'warn' : 'muted'
  }">${e(words)}</span>`;
}

/** The limits in words. */
function limitsText(l: IdentityLimits): string {
  const parts = [
    l.monthlyBytes !== undefined && `quota ${formatBytes(l.monthlyBytes)} a month`,
    l.bytesPerSecond !== undefined && `bandwidth ${formatBytes(l.bytesPerSecond)}/s`,
    l.maxConcurrent !== undefined && `at most ${l.maxConcurrent} rendezvous at once`,
  ].filter(Boolean);
  return parts.length ? parts.join('; ') : 'no limits';
}

/** What the form shows: what was typed (after a refused post), else the limits as set. */
export type LimitValues = Partial<Record<LimitField, string>>;

/** The form's values for limits as set (exact, so saving it unchanged changes nothing). */
export function limitValues(l: IdentityLimits): LimitValues {
  return {
    quota: l.monthlyBytes === undefined ? '' : exactBytes(l.monthlyBytes),
    bandwidth: l.bytesPerSecond === undefined ? '' : `${exactBytes(l.bytesPerSecond)}/s`,
    'max-concurrent': l.maxConcurrent === undefined ? '' : String(l.maxConcurrent),
  };
}

/**
 * The body of the usage page of `v`: its figures, chart and limits form (signed with `csrf`).
 * `error`: why the last post was refused (shown above the form, which keeps what was typed);
 * `saved`: the limits were just stored.
 */
export function usageBody(
  v: UsageView,
  csrf: string,
  opts: { error?: string; values?: LimitValues; saved?: boolean } = {},
): string {
  const values = opts.values ?? limitValues(v.limits);
  const quota = v.limits.monthlyBytes;
  const action = `/identities/${encodeURIComponent(v.uuid)}/limits`;
  const field = (name: LimitField, label: string, hint: string) =>
    `<label>${label} <input name="${name}" id="limit-${name}" value="${e(values[name])}" maxlength="100" placeholder="${e(
      hint,
    )}"></label>`;
  return `<p><a href="/">← All hidden servers</a></p>
<h1>Usage of <code>${e(v.uuid)}</code>${v.label ? ` <span class="muted">${e(v.label)}</span>` : ''}</h1>
<p class="muted">UTC days and months; read at <time datetime="${e(v.at)}">${e(v.at)}</time>. JSON: <a href="/api/identities/${encodeURIComponent(
    v.uuid,
  )}/usage">/api/identities/${e(v.uuid)}/usage</a>. Relays write usage about once a minute.</p>
<div class="card">${totalsTable('today', 'Today', v.today)}</div>
<div class="card">${totalsTable('month', 'This month', v.month)}${
    quota ? `<p>${monthCell(v.monthBytes, v.limits)}</p>` : ''
  }</div>
<div class="card"><h2>Last 30 days</h2>${dayChart(v.days)}<p class="muted">${e(v.days[0]?.day)} to ${e(
    v.days[v.days.length - 1]?.day,
  )} (today, right); a bar's tooltip gives its day and bytes.</p></div>
<div class="card" id="limits"><h2>Limits</h2><p id="limits-now">${e(limitsText(v.limits))}</p>${
    opts.saved ? '<p class="online" id="limits-saved" role="status">Limits saved.</p>' : ''
  }${opts.error ? `<p class="disabled" id="limits-error" role="alert">Not saved: ${e(opts.error)}</p>` : ''}
<form method="post" action="${action}"><input type="hidden" name="csrf" value="${e(csrf)}">
${field('quota', 'Monthly quota', 'e.g. 10GB (empty: none)')}
${field('bandwidth', 'Bandwidth', 'e.g. 1MB/s (empty: none)')}
${field('max-concurrent', 'Max concurrent', 'e.g. 8 (empty: default)')}
<button type="submit" id="save-limits">Save limits</button></form>
<form method="post" action="${action}"><input type="hidden" name="csrf" value="${e(csrf)}"><input type="hidden" name="clear" value="1">
<p><button class="danger" type="submit" id="clear-limits">Clear all limits</button></p></form>
<p class="muted">Sizes: decimal (kB, MB, GB, TB) or binary (KiB, MiB, GiB, TiB) units, or bytes. Empty or <code>none</code>: no limit. Relays apply a change within seconds; a quota counts both directions over both protocols this UTC month.</p></div>`;
}
