/**
 * The console's HTML: the list page (a table of the rows, refreshed every REFRESH_MS by a small
 * script that runs under the response's nonce), the rows alone (what the refresh fetches), the
 * page that shows a new or rotated secret exactly once (with a QR code of its otpauth URI), the
 * delete and disable confirmations, and the error pages. Every value is escaped; forms carry the session's
 * CSRF token, which the caller passes in.
 */
import escapeHtml from 'escape-html';
import QRCode from 'qrcode';
import type { ParkKind } from '../core/protocol.js';
import type { ProvisionedIdentity } from '../server/identities.js';
import { type IdentityRow, type ProtocolView, type RowOrder, type UtcTime, utc } from './rows.js';
import { type LimitValues, monthCell, type UsageView, usageBody } from './usage-view.js';

/** How often the list page fetches its rows again. */
export const REFRESH_MS = 5_000;

/** Escapes any value for HTML text or a quoted attribute (absent: empty). */
const e = (s: unknown): string => escapeHtml(String(s ?? ''));
/** A time element (UTC ISO), or a dash. */
const when = (t?: UtcTime) => (t ? `<time datetime="${e(t)}">${e(t)}</time>` : '—');
const bytes = (n: number) =>
  n < 1024 ? `${n} B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`;
const duration = (ms: number) =>
  ms < 1000 ? `${ms} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`;
const PROTOCOL_NAMES: Record<ParkKind, string> = { generic: 'generic', http: 'HTTP' };

/** One protocol's block in the Live column. */
function protocolHtml(kind: ParkKind, v: ProtocolView): string {
  const parked = v.parked
    ? `${v.parked} parked on ${v.relays
        .map((r) => {
          const where = [r.region, r.peer && `relay ${r.peer}`].filter(Boolean).join(', ');
          return `${e(r.address)}${where ? ` (${e(where)})` : ''}${v.relays.length > 1 ? ` ×${r.count}` : ''}`;
        })
        .join(', ')}`
    : 'not parked';
  const target = v.target
    ? `<span class="target ${v.target === 'up' ? 'online' : 'warn'}" data-target="${e(v.target)}">target ${
        v.target === 'up' ? 'reachable' : 'unreachable'
      }</span> <span class="muted">(reported ${when(v.targetReportedAt)})</span>`
    : v.parked
      ? '<span class="target muted">target not reported</span>'
      : '';
  const l = v.last;
  const last = l
    ? `last ${when(l.at)} <span class="end-${e(l.end)}">${e(l.end)}</span>, ${e(bytes(l.bytesToHidden))} → hidden, ${e(
        bytes(l.bytesToMobile),
      )} → mobile, ${e(duration(l.durationMs))}${l.hops ? ', via a peer relay' : ''} <span class="muted">on ${e(l.relay)}${
        l.region ? ` (${e(l.region)})` : ''
      }</span>`
    : '<span class="muted">no rendezvous recorded</span>';
  return `<div class="proto" data-protocol="${kind}"><strong>${PROTOCOL_NAMES[kind]}</strong>: <span class="parked" data-parked="${v.parked}">${parked}</span> ${target}<br><span class="last">${last}</span></div>`;
}

// The table fits a 1280 px window: long values (uuids, relay names, imported settings) wrap
// anywhere rather than widen their column, and the actions stack in a narrow last column.
const STYLE = `body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:96rem;padding:0 1rem;color:#1d2330}
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.45rem .5rem;border-bottom:1px solid #e3e6ec;vertical-align:top;overflow-wrap:break-word}
.online{color:#127a3a;font-weight:600}.imported{color:#8a4b00;font-weight:600}.offline{color:#8a93a3}.disabled{color:#b42318;font-weight:600}
form.inline{display:inline}button{font:inherit;padding:.25rem .7rem;border-radius:6px;border:1px solid #b9c0cc;background:#fff;cursor:pointer}
button.danger{border-color:#d92d20;color:#b42318}input{font:inherit;padding:.3rem .5rem;border:1px solid #b9c0cc;border-radius:6px}
td.actions{width:7.5rem}td.actions form{display:block;margin-bottom:.3rem}td.actions button{width:100%;white-space:nowrap}
.card{border:1px solid #e3e6ec;border-radius:10px;padding:1rem 1.2rem;margin:1rem 0}.secret{font:600 1.1rem ui-monospace,monospace;background:#f4f6fa;padding:.4rem .6rem;border-radius:6px}
pre{background:#f4f6fa;padding:.8rem;border-radius:8px;overflow-x:auto}.qr svg{width:12rem;height:12rem}.muted{color:#5b6475}
.warn,.locked{color:#b54708;font-weight:600}.proto{margin-bottom:.3rem}.live,.lockout,.compat{font-size:.9rem}.when{font-size:.85rem}
time{white-space:nowrap}.live,.identity code{overflow-wrap:anywhere}.identity{min-width:10rem}
td.month{width:6.5rem;font-size:.9rem}meter.quota{width:5.5rem}th a{color:inherit}
table.usage{width:auto;min-width:32rem}table.usage caption{text-align:left;font-weight:600;padding:.3rem 0}.chart rect.bar{fill:#3b6fd8}
#limits label{display:inline-block;margin:0 1rem .5rem 0}h2{font-size:1.1rem;margin:.2rem 0 .6rem}`;

/** A whole page: the title, the style, the body (its scripts need the response's nonce). */
function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${e(title)} — rendezvous</title><style>${STYLE}</style></head><body>${body}</body></html>`;
}

/**
 * The list page's refresh: fetches the rows again every REFRESH_MS while the page is visible and
 * swaps them in (server-rendered and escaped, the same renderer as the first load).
 */
const REFRESH_SCRIPT = `(() => {
  const params = new URLSearchParams(location.search);
  const query = new URLSearchParams({ q: params.get('q') || '', sort: params.get('sort') || '' });
  const tbody = document.querySelector('#identities tbody');
  const stamp = document.getElementById('refreshed');
  let busy = false;
  let shown = null;
  setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const res = await fetch('/rows?' + query, { cache: 'no-store', credentials: 'same-origin' });
      if (res.ok) {
        const html = await res.text();
        // Swapped only when the figures changed, so a button under the pointer stays put.
        if (html !== shown) tbody.innerHTML = html;
        shown = html;
        stamp.textContent = new Date().toISOString().slice(0, 19) + 'Z';
        stamp.dateTime = stamp.textContent;
      }
    } catch {}
    busy = false;
  }, ${REFRESH_MS});
})();`;

/** The hidden form field that carries the session's CSRF token. */
const csrfField = (csrf: string) => `<input type="hidden" name="csrf" value="${e(csrf)}">`;

/** The table's rows (what `GET /rows` returns and the list page embeds); `csrf` signs their forms. */
export function rowsHtml(rows: IdentityRow[], csrf: string): string {
  const token = csrfField(csrf);
  const action = (uuid: string, verb: string, label: string, cls = '') =>
    `<form class="inline" method="post" action="/identities/${encodeURIComponent(uuid)}/${verb}">${token}<button ${cls} type="submit" data-action="${verb}">${label}</button></form>`;
  // The actions that ask first: a GET to their confirmation page, which posts.
  const ask = (uuid: string, verb: string, label: string, cls = '') =>
    `<form class="inline" method="get" action="/identities/${encodeURIComponent(uuid)}/${verb}"><button ${cls} type="submit" data-action="${verb}">${label}</button></form>`;
  // Where it is parked is the Live column's to say; this one says the state.
  const status = (r: IdentityRow) => {
    if (r.disabled) return '<span class="disabled">disabled</span>';
    if (!r.parkedOn.length) return '<span class="offline">offline</span>';
    // Parked but its agent says the target is down: reachable relay, unreachable service.
    const down = [r.generic, r.http].some((v) => v.parked && v.target === 'down');
    return down
      ? '<span class="warn">online, target unreachable</span>'
      : '<span class="online">online</span>';
  };
  const lockout = (r: IdentityRow) =>
    r.lockout.locked
      ? `<span class="locked" data-locked="true">locked out</span> <span class="muted">until ${when(r.lockout.until)} (${r.lockout.failures} wrong codes; addresses it registered from still get in)</span> ${action(r.uuid, 'unlock', 'Unlock')}`
      : `<span data-locked="false">${r.lockout.failures ? `${r.lockout.failures} of ${r.lockout.limit} wrong codes <span class="muted">until ${when(r.lockout.until)}</span>` : '<span class="muted">no wrong codes</span>'}</span>`;
  const body = rows
    .map(
      (r) => `<tr data-uuid="${e(r.uuid)}"><td class="identity"><code>${e(r.uuid)}</code>${
        r.label ? `<br>${e(r.label)}` : ''
      }<br><span class="when muted">created ${when(r.createdAt)}</span></td>
<td class="compat">${
        r.compat
          ? `<span class="imported">${e(r.importedFrom ? `imported: ${r.importedFrom}` : 'compatibility')}</span><br><span class="muted">${e(r.compat)}</span>`
          : '<span class="muted">strict</span>'
      }</td>
<td><span class="status">${status(r)}</span><br><span class="when muted">registered ${when(r.lastRegistration)}${
        r.region ? ` (${e(r.region)})` : ''
      }<br>seen ${when(r.lastSeen)}</span></td>
<td class="live">${protocolHtml('generic', r.generic)}${protocolHtml('http', r.http)}</td>
<td class="month">${monthCell(r.monthBytes, r.limits)}<br><a class="usage-link" href="/identities/${encodeURIComponent(
        r.uuid,
      )}/usage">usage, limits</a></td>
<td class="lockout">${lockout(r)}</td>
<td class="actions">${action(r.uuid, 'rotate', 'Rotate secret')}${
        r.disabled ? action(r.uuid, 'enable', 'Enable') : ask(r.uuid, 'disable', 'Disable…')
      }${ask(r.uuid, 'delete', 'Delete…', 'class="danger"')}</td></tr>`,
    )
    .join('\n');
  return body || '<tr><td colspan="7" class="muted">No identities yet.</td></tr>';
}

/** The list page: the create form, the filter `q`, the rows, and the refresh script under `nonce`. */
export function listPage(
  rows: IdentityRow[],
  opts: { q: string; nonce: string; csrf: string; notice?: string; order?: RowOrder },
): string {
  const { q, nonce, csrf, notice = '', order = 'default' } = opts;
  // The month's header sorts by use, and back; the filter is kept either way.
  const sortLink = (to: RowOrder, text: string) =>
    `<a id="sort-${to}" href="/?${e(new URLSearchParams({ q, ...(to === 'usage' ? { sort: 'usage' } : {}) }).toString())}">${text}</a>`;
  const monthHead =
    order === 'usage'
      ? `This month ↓ <span class="muted">(${sortLink('default', 'default order')})</span>`
      : sortLink('usage', 'This month');
  const body = rowsHtml(rows, csrf);
  return page(
    'Hidden servers',
    `<h1>Hidden servers</h1>${notice}
<div class="card"><form method="post" action="/identities">${csrfField(csrf)}
<label>Label <input name="label" maxlength="100" placeholder="Ann's laptop"></label>
<label>UUID <input name="uuid" maxlength="128" placeholder="(random)"></label>
<button type="submit" id="create">Create identity</button></form></div>
<form method="get" action="/"><input name="q" value="${e(q)}" placeholder="Filter by uuid or label">${
      order === 'usage' ? '<input type="hidden" name="sort" value="usage">' : ''
    } <button type="submit">Filter</button></form>
<p class="muted">Times in UTC. Refreshes every ${REFRESH_MS / 1000} s; last at <time id="refreshed" datetime="${utc(Date.now())}">${utc(Date.now())}</time>.</p>
<table id="identities"><thead><tr><th>Identity</th><th>Codes</th><th>Now</th><th>Live, per protocol</th><th>${monthHead}</th><th>Wrong codes</th><th></th></tr></thead>
<tbody>${body}</tbody></table><script nonce="${nonce}">${REFRESH_SCRIPT}</script>`,
  );
}

/**
 * The one page that shows a secret (created or rotated: `verb`), with its QR code and the hidden
 * server's environment (`apiUrl`, else a placeholder).
 */
export async function secretPage(id: ProvisionedIdentity, verb: string, apiUrl?: string): Promise<string> {
  const qr = await QRCode.toString(id.otpauth, { type: 'svg', margin: 1 });
  const api = apiUrl ?? '<API URL>';
  return page(
    `Secret for ${id.uuid}`,
    `<h1>${e(verb)}: <code>${e(id.uuid)}</code></h1>
<div class="card"><p><strong>This secret is shown once.</strong> Copy it to the hidden server now; it is not shown again.</p>
<p>Secret <span class="secret" id="secret">${e(id.secret)}</span></p>
<div class="qr" id="qr" aria-label="QR code of the otpauth URI">${qr}</div>
<p class="muted">${e(id.digits)} digits, ${e(id.step)} s steps, ${e(id.algorithm)}</p>
<p>Environment for the hidden server:</p><pre id="env">export RENDEZVOUS_SECRET=${e(id.secret)}
export RENDEZVOUS_API=${e(api)}</pre>
<p>Install the client there once (Node.js; it puts the <code>rendezvous</code> command on the PATH):</p>
<pre id="install">npm install -g @rendezvous-relay/client</pre>
<p class="muted">Until the package is on the registry, pack it in this repository's clone (<code>npm pack ./packages/client</code>), copy the <code>.tgz</code> there and <code>npm install -g ./rendezvous-relay-client-0.1.0.tgz</code>.</p>
<p>Then, in the shell with that environment:</p><pre id="expose">rendezvous expose --uuid ${e(id.uuid)} --to 127.0.0.1:22</pre>
<p class="muted">Not <code>npx rendezvous</code>: outside this repository's clone that fetches an unrelated registry package of that name, which would run with the secret in its environment.</p></div>
<p><a href="/">Back to the list</a></p>`,
  );
}

/** The usage and limits page of one identity (its form signed with `csrf`; see usageBody). */
export function usagePage(
  v: UsageView,
  csrf: string,
  opts: { error?: string; values?: LimitValues; saved?: boolean } = {},
): string {
  return page(`Usage of ${v.uuid}`, usageBody(v, csrf, opts));
}

/** What each confirmation page says and its button (the verbs that ask first). */
const CONFIRMS = {
  delete: {
    title: 'Delete',
    text: 'Its secret and registration are removed; the hidden server can no longer register.',
    button: 'Delete for good',
  },
  disable: {
    title: 'Disable',
    text: 'Its codes are refused and its registration and parked sockets end, until it is enabled again.',
    button: 'Disable',
  },
} as const;

/** The confirmation of `verb` (delete or disable) for `uuid` (its form signed with `csrf`). */
export function confirmPage(verb: keyof typeof CONFIRMS, uuid: string, csrf: string): string {
  const c = CONFIRMS[verb];
  return page(
    c.title,
    `<h1>${c.title} <code>${e(uuid)}</code>?</h1><p>${c.text}</p>
<form method="post" action="/identities/${encodeURIComponent(uuid)}/${verb}">${csrfField(csrf)}
<button class="danger" type="submit" id="confirm-${verb}">${c.button}</button> <a href="/">Cancel</a></form>`,
  );
}

/** The page of a refused request, saying why. */
export const forbiddenPage = (why: string): string => page('Forbidden', `<h1>Forbidden</h1><p>${e(why)}</p>`);

/** The page of an unknown route. */
export const notFoundPage = (): string => page('Not found', '<h1>Not found</h1>');

/** The page of a failed request (`message`: the domain error's, or a fixed one). */
export const errorPage = (message: string): string =>
  page('Error', `<h1>Error</h1><p>${e(message)}</p><p><a href="/">Back</a></p>`);
