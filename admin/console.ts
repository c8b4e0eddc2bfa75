/**
 * The operator console (`rendezvous admin`): a server-rendered page on 127.0.0.1 only, using the
 * operator's own credentials against the table. Lists identities with their registration and, per
 * protocol, what the store knows live: parked sockets and on which relay (its public address and
 * region), the agent-reported target state, the last rendezvous and its outcome; and each
 * identity's lockout (wrong-code guesses) with an unlock action. Creates, rotates, disables,
 * enables and deletes identities. A new or rotated secret is shown exactly once (with a QR code of
 * its otpauth URI) and never appears in a list, a log or a URL. Mutations need the session's CSRF
 * token and a same-origin request. The list refreshes itself every REFRESH_MS (a small script with
 * a per-response nonce); `GET /api/servers` gives the same figures as JSON. Times are UTC ISO 8601.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import escapeHtml from 'escape-html';
import QRCode from 'qrcode';
import { isRendezvousError } from '../core/errors.js';
import { type Log, silentLog } from '../core/log.js';
import type { TotpCompat } from '../core/totp.js';
import { authPolicyFromEnv } from '../server/config.js';
import { secretsEqual } from '../server/cookies.js';
import {
  checkUuid,
  type ProvisionedIdentity,
  provisionIdentity,
  rotateIdentitySecret,
  setIdentityDisabled,
} from '../server/identities.js';
import { FAILURE_LIMIT_DEFAULTS, type FailurePolicy } from '../server/limits.js';
import {
  type Identity,
  type LastRendezvousRecord,
  PARK_RECORD_TTL_SECONDS,
  type ParkKind,
  type ParkRecord,
  type Store,
} from '../server/store/index.js';

/** Default port of the console. */
export const ADMIN_PORT = 8893;
const MAX_FORM = 8 * 1024;
/** How often the list page fetches its rows again. */
export const REFRESH_MS = 5_000;
/** How long one gathering of the rows serves every request (many tabs cost one). */
const GATHER_CACHE_MS = 2_000;

/** A UTC ISO 8601 time to the second (`2026-12-01T04:21:05Z`). */
export type UtcTime = string;

/** Epoch milliseconds as UTC ISO 8601 to the second. */
export function utc(ms: number): UtcTime {
  return `${new Date(ms).toISOString().slice(0, 19)}Z`;
}
const utcSec = (sec?: number) => (sec === undefined ? undefined : utc(sec * 1000));

/** One relay holding an identity's sockets parked through one protocol. */
export interface ParkedOn {
  /** The relay's public address for the protocol (`host:port` or URL), else its peer address or id. */
  address: string;
  region?: string;
  /** The relay's own address in its cluster (which task, where all share one public name). */
  peer?: string;
  relayId: string;
  count: number;
  /** What the parked agent reported about its target (absent: it did not say). */
  target?: 'up' | 'down';
  targetSince?: UtcTime;
  targetReportedAt?: UtcTime;
}

/** One protocol's live figures for an identity. */
export interface ProtocolView {
  /** Sockets parked now, on all relays. */
  parked: number;
  relays: ParkedOn[];
  /** The freshest report of the relays' agents (absent: none reported). */
  target?: 'up' | 'down';
  targetReportedAt?: UtcTime;
  last?: {
    at: UtcTime;
    end: string;
    bytesToHidden: number;
    bytesToMobile: number;
    durationMs: number;
    hops: number;
    relay: string;
    region?: string;
  };
}

/** An identity's wrong-code guess state. */
export interface LockoutView {
  locked: boolean;
  /** Wrong codes in the current window, of `limit`. */
  failures: number;
  limit: number;
  /** When the window ends (the lock with it). */
  until?: UtcTime;
}

/** What the console shows per identity (no secret). */
export interface IdentityRow {
  uuid: string;
  label?: string;
  createdAt: UtcTime;
  disabled: boolean;
  lastRegistration?: UtcTime;
  region?: string;
  /** Relays (public addresses) holding parked sockets now, either protocol. */
  parkedOn: string[];
  lastSeen?: UtcTime;
  /** Compatibility settings (imported from node-rendezvous), in words; absent for strict identities. */
  compat?: string;
  importedFrom?: string;
  generic: ProtocolView;
  http: ProtocolView;
  lockout: LockoutView;
}

/** The compatibility settings of an identity in words, as the console shows them. */
export function describeCompat(c: TotpCompat): string {
  return [
    c.digits === 'original' ? 'codes: unreduced 1–10 digits' : `codes: last ${c.digits} digits, unpadded`,
    c.encoding === 'speakeasy' ? 'speakeasy key (UTF-8 of the bytes)' : 'RFC 6238 key',
    c.window === 0 ? 'no ±1 window' : '±1 step window',
    c.reuseWithinStep ? 'code reusable within its step' : 'one use per code',
    c.cookieLifetime === 'next-registration'
      ? 'cookie until the next registration'
      : `cookie ${c.cookieLifetime} s`,
  ].join('; ');
}

/** How a park record names its relay: public address, else HTTP URL, else peer address, else id. */
const relayName = (p: ParkRecord) => p.address || p.httpUrl || p.peer || `relay ${p.relayId.slice(0, 8)}`;

/** One protocol's figures from its park records and last rendezvous. */
function protocolView(parks: ParkRecord[], last: LastRendezvousRecord | undefined): ProtocolView {
  const relays: ParkedOn[] = parks.map((p) => ({
    address: relayName(p),
    region: p.region,
    peer: p.peer && p.peer !== relayName(p) ? p.peer : undefined,
    relayId: p.relayId,
    count: p.count,
    target: p.target,
    targetSince: p.targetSince ? utc(p.targetSince) : undefined,
    targetReportedAt: p.targetAt ? utc(p.targetAt) : undefined,
  }));
  // Several relays may hold the agent's sockets: the newest report is the truth.
  const freshest = parks.filter((p) => p.target).sort((a, b) => (b.targetAt ?? 0) - (a.targetAt ?? 0))[0];
  return {
    parked: parks.reduce((n, p) => n + p.count, 0),
    relays,
    target: freshest?.target,
    targetReportedAt: freshest?.targetAt ? utc(freshest.targetAt) : undefined,
    last: last && {
      at: utc(last.at),
      end: last.end,
      bytesToHidden: last.bytesToHidden,
      bytesToMobile: last.bytesToMobile,
      durationMs: last.durationMs,
      hops: last.hops,
      relay: last.address || `relay ${last.relayId.slice(0, 8)}`,
      region: last.region,
    },
  };
}

/** Gathers the rows: identity, registration, park records, last rendezvous, guess counter. */
export async function identityRows(
  store: Store,
  nowMs = Date.now(),
  failures: FailurePolicy = {},
): Promise<IdentityRow[]> {
  const identities = await store.listIdentities();
  const limit = failures.maxFailures ?? FAILURE_LIMIT_DEFAULTS.maxFailures;
  const windowSec = failures.failureWindowSeconds ?? FAILURE_LIMIT_DEFAULTS.failureWindowSeconds;
  return Promise.all(
    identities.map(async (id: Identity) => {
      const reg = await store.getRegistrationRecord(id.uuid);
      const [generic, http, last, attempts] = await Promise.all([
        reg ? store.listParks('generic', reg.cookie, nowMs) : ([] as ParkRecord[]),
        store.listParks('http', id.uuid, nowMs),
        store.getLastRendezvous(id.uuid, nowMs),
        store.getAttempts('uuid', id.uuid),
      ]);
      const parks = [...generic, ...http];
      // A park record is rewritten at least every third of its TTL: written no earlier than this.
      const seen = [reg?.registeredAt, ...parks.map((p) => p.expiresAt - PARK_RECORD_TTL_SECONDS)].filter(
        (v): v is number => v !== undefined,
      );
      // The counter's window is the lock: guesses stop being evaluated at `limit` until it ends.
      const windowEnds = attempts ? attempts.windowStart + windowSec : 0;
      const current = attempts && windowEnds * 1000 > nowMs ? attempts.count : 0;
      return {
        uuid: id.uuid,
        label: id.label,
        createdAt: utcSec(id.createdAt) as UtcTime,
        disabled: Boolean(id.disabled),
        lastRegistration: utcSec(reg?.registeredAt),
        region: reg?.region,
        parkedOn: [...new Set(parks.map(relayName))],
        lastSeen: seen.length ? utcSec(Math.max(...seen)) : undefined,
        compat: id.compat ? describeCompat(id.compat) : undefined,
        importedFrom: id.compat?.importedFrom,
        generic: protocolView(generic, last.generic),
        http: protocolView(http, last.http),
        lockout: {
          locked: current >= limit,
          failures: current,
          limit,
          until: current > 0 ? utcSec(windowEnds) : undefined,
        },
      };
    }),
  );
}

const e = (s: unknown) => escapeHtml(String(s ?? ''));
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

const STYLE = `body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:96rem;padding:0 1rem;color:#1d2330}
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e3e6ec;vertical-align:top}
.online{color:#127a3a;font-weight:600}.imported{color:#8a4b00;font-weight:600}.offline{color:#8a93a3}.disabled{color:#b42318;font-weight:600}
form.inline{display:inline}button{font:inherit;padding:.25rem .7rem;border-radius:6px;border:1px solid #b9c0cc;background:#fff;cursor:pointer}
button.danger{border-color:#d92d20;color:#b42318}input{font:inherit;padding:.3rem .5rem;border:1px solid #b9c0cc;border-radius:6px}
.card{border:1px solid #e3e6ec;border-radius:10px;padding:1rem 1.2rem;margin:1rem 0}.secret{font:600 1.1rem ui-monospace,monospace;background:#f4f6fa;padding:.4rem .6rem;border-radius:6px}
pre{background:#f4f6fa;padding:.8rem;border-radius:8px;overflow-x:auto}.qr svg{width:12rem;height:12rem}.muted{color:#5b6475}
time{white-space:nowrap}.warn,.locked{color:#b54708;font-weight:600}.proto{margin-bottom:.3rem}.live{font-size:.9rem;min-width:24rem}`;

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${e(title)} — rendezvous</title><style>${STYLE}</style></head><body>${body}</body></html>`;
}

/**
 * The list page's refresh: fetches the rows again every REFRESH_MS while the page is visible and
 * swaps them in (server-rendered and escaped, the same renderer as the first load).
 */
const REFRESH_SCRIPT = `(() => {
  const q = new URLSearchParams(location.search).get('q') || '';
  const tbody = document.querySelector('#identities tbody');
  const stamp = document.getElementById('refreshed');
  let busy = false;
  let shown = null;
  setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const res = await fetch('/rows?q=' + encodeURIComponent(q), { cache: 'no-store', credentials: 'same-origin' });
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

/** A running console. */
export interface AdminConsole {
  url: string;
  close(): Promise<void>;
}

/** Starts the console on 127.0.0.1 (never another address). */
export async function startAdminConsole(opts: {
  store: Store;
  port?: number;
  /** Shown in the expose snippet (else a placeholder). */
  apiUrl?: string;
  /** The guess limits the API and relays apply (default: the environment's, as theirs). */
  failures?: FailurePolicy;
  log?: Log;
}): Promise<AdminConsole> {
  const log = opts.log ?? silentLog;
  const failures = opts.failures ?? authPolicyFromEnv();
  const key = randomBytes(32);
  const tokenFor = (session: string) => createHmac('sha256', key).update(session).digest('base64url');
  let origin = '';

  const sessionOf = (req: IncomingMessage) =>
    /(?:^|;\s*)rv_session=([A-Za-z0-9_-]{20,})/.exec(req.headers.cookie ?? '')?.[1];

  const send = (
    res: ServerResponse,
    status: number,
    html: string,
    headers: Record<string, string> = {},
    /** Admits the page's own script (and its fetches of this origin); other pages run none. */
    nonce?: string,
  ) => {
    res.writeHead(status, {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'content-security-policy': `default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'${
        nonce ? `; script-src 'nonce-${nonce}'; connect-src 'self'` : ''
      }`,
      'x-content-type-options': 'nosniff',
      // same-origin, not no-referrer: with no-referrer browsers send `Origin: null` on form posts.
      'referrer-policy': 'same-origin',
      ...headers,
    });
    res.end(html);
  };
  const forbidden = (res: ServerResponse, why: string) =>
    send(res, 403, page('Forbidden', `<h1>Forbidden</h1><p>${e(why)}</p>`));

  const readForm = async (req: IncomingMessage): Promise<URLSearchParams | undefined> => {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > MAX_FORM) return undefined;
      chunks.push(c);
    }
    return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
  };

  // One gathering serves every open tab for a moment: each costs about five reads per identity.
  let gathered: { at: number; rows: Promise<IdentityRow[]> } | undefined;
  const gather = () => {
    if (!gathered || Date.now() - gathered.at > GATHER_CACHE_MS) {
      const rows = identityRows(opts.store, Date.now(), failures);
      rows.catch(() => {
        gathered = undefined;
      });
      gathered = { at: Date.now(), rows };
    }
    return gathered.rows;
  };
  const rowsOf = async (q: string) =>
    (await gather()).filter(
      (r) =>
        !q ||
        r.uuid.toLowerCase().includes(q.toLowerCase()) ||
        (r.label ?? '').toLowerCase().includes(q.toLowerCase()),
    );

  const rowsHtml = async (session: string, q: string) => {
    const rows = await rowsOf(q);
    const csrf = `<input type="hidden" name="csrf" value="${e(tokenFor(session))}">`;
    const action = (uuid: string, verb: string, label: string, cls = '') =>
      `<form class="inline" method="post" action="/identities/${encodeURIComponent(uuid)}/${verb}">${csrf}<button ${cls} type="submit" data-action="${verb}">${label}</button></form>`;
    const status = (r: IdentityRow) => {
      if (r.disabled) return '<span class="disabled">disabled</span>';
      if (!r.parkedOn.length) return '<span class="offline">offline</span>';
      // Parked but its agent says the target is down: reachable relay, unreachable service.
      const down = [r.generic, r.http].some((v) => v.parked && v.target === 'down');
      return `${
        down ? '<span class="warn">online, target unreachable</span>' : '<span class="online">online</span>'
      } <span class="muted">${r.parkedOn.map(e).join(', ')}</span>`;
    };
    const lockout = (r: IdentityRow) =>
      r.lockout.locked
        ? `<span class="locked" data-locked="true">locked out</span> <span class="muted">until ${when(r.lockout.until)} (${r.lockout.failures} wrong codes; addresses it registered from still get in)</span> ${action(r.uuid, 'unlock', 'Unlock')}`
        : `<span data-locked="false">${r.lockout.failures ? `${r.lockout.failures} of ${r.lockout.limit} wrong codes <span class="muted">until ${when(r.lockout.until)}</span>` : '<span class="muted">no wrong codes</span>'}</span>`;
    const body = rows
      .map(
        (
          r,
        ) => `<tr data-uuid="${e(r.uuid)}"><td><code>${e(r.uuid)}</code></td><td>${e(r.label ?? '')}</td><td>${when(r.createdAt)}</td>
<td class="compat">${
          r.compat
            ? `<span class="imported">${e(r.importedFrom ? `imported: ${r.importedFrom}` : 'compatibility')}</span><br><span class="muted">${e(r.compat)}</span>`
            : '<span class="muted">strict</span>'
        }</td>
<td>${when(r.lastRegistration)}${r.region ? ` <span class="muted">(${e(r.region)})</span>` : ''}</td>
<td class="status">${status(r)}</td>
<td class="live">${protocolHtml('generic', r.generic)}${protocolHtml('http', r.http)}</td>
<td class="lockout">${lockout(r)}</td><td>${when(r.lastSeen)}</td>
<td>${action(r.uuid, 'rotate', 'Rotate secret')} ${r.disabled ? action(r.uuid, 'enable', 'Enable') : action(r.uuid, 'disable', 'Disable')}
<a href="/identities/${encodeURIComponent(r.uuid)}/delete"><button type="button" class="danger">Delete…</button></a></td></tr>`,
      )
      .join('\n');
    return body || '<tr><td colspan="10" class="muted">No identities yet.</td></tr>';
  };

  const listPage = async (session: string, q: string, nonce: string, notice = '') => {
    const body = await rowsHtml(session, q);
    const csrf = `<input type="hidden" name="csrf" value="${e(tokenFor(session))}">`;
    return page(
      'Hidden servers',
      `<h1>Hidden servers</h1>${notice}
<div class="card"><form method="post" action="/identities">${csrf}
<label>Label <input name="label" maxlength="100" placeholder="Ann's laptop"></label>
<label>UUID <input name="uuid" maxlength="128" placeholder="(random)"></label>
<button type="submit" id="create">Create identity</button></form></div>
<form method="get" action="/"><input name="q" value="${e(q)}" placeholder="Filter by uuid or label"> <button type="submit">Filter</button></form>
<p class="muted">Times in UTC. Refreshes every ${REFRESH_MS / 1000} s; last at <time id="refreshed" datetime="${utc(Date.now())}">${utc(Date.now())}</time>.</p>
<table id="identities"><thead><tr><th>UUID</th><th>Label</th><th>Created</th><th>Codes</th><th>Last registration</th><th>Now</th><th>Live, per protocol</th><th>Wrong codes</th><th>Last seen</th><th></th></tr></thead>
<tbody>${body}</tbody></table><script nonce="${nonce}">${REFRESH_SCRIPT}</script>`,
    );
  };

  const secretPage = async (id: ProvisionedIdentity, verb: string) => {
    const qr = await QRCode.toString(id.otpauth, { type: 'svg', margin: 1 });
    const api = opts.apiUrl ?? '<API URL>';
    return page(
      `Secret for ${id.uuid}`,
      `<h1>${e(verb)}: <code>${e(id.uuid)}</code></h1>
<div class="card"><p><strong>This secret is shown once.</strong> Copy it to the hidden server now; it is not shown again.</p>
<p>Secret <span class="secret" id="secret">${e(id.secret)}</span></p>
<div class="qr" id="qr" aria-label="QR code of the otpauth URI">${qr}</div>
<p class="muted">${e(id.digits)} digits, ${e(id.step)} s steps, ${e(id.algorithm)}</p>
<p>Environment for the hidden server:</p><pre id="env">export RENDEZVOUS_SECRET=${e(id.secret)}
export RENDEZVOUS_API=${e(api)}</pre>
<p>Then:</p><pre id="expose">npx rendezvous expose --uuid ${e(id.uuid)} --to 127.0.0.1:22</pre></div>
<p><a href="/">Back to the list</a></p>`,
    );
  };

  const server = createServer(async (req, res) => {
    try {
      // DNS rebinding: only our own host names reach the console.
      const host = req.headers.host ?? '';
      if (!/^(127\.0\.0\.1|localhost):\d+$/.test(host)) return forbidden(res, 'unexpected Host');
      const url = new URL(req.url ?? '/', `http://${host}`);
      let session = sessionOf(req);
      const headers: Record<string, string> = {};
      if (!session) {
        session = randomBytes(24).toString('base64url');
        headers['set-cookie'] = `rv_session=${session}; HttpOnly; SameSite=Strict; Path=/`;
      }
      if (req.method === 'GET' && url.pathname === '/') {
        const nonce = randomBytes(16).toString('base64');
        const html = await listPage(session, url.searchParams.get('q') ?? '', nonce);
        return send(res, 200, html, headers, nonce);
      }
      if (req.method === 'GET' && url.pathname === '/rows') {
        return send(res, 200, await rowsHtml(session, url.searchParams.get('q') ?? ''), headers);
      }
      if (req.method === 'GET' && url.pathname === '/api/servers') {
        const servers = await rowsOf(url.searchParams.get('q') ?? '');
        res.writeHead(200, {
          'content-type': 'application/json; charset=utf-8',
          'cache-control': 'no-store',
          'x-content-type-options': 'nosniff',
        });
        return res.end(JSON.stringify({ at: utc(Date.now()), servers }));
      }
      const del = /^\/identities\/([^/]+)\/delete$/.exec(url.pathname);
      if (req.method === 'GET' && del) {
        const uuid = decodeURIComponent(del[1] as string);
        return send(
          res,
          200,
          page(
            'Delete',
            `<h1>Delete <code>${e(uuid)}</code>?</h1><p>Its secret and registration are removed; the hidden server can no longer register.</p>
<form method="post" action="/identities/${encodeURIComponent(uuid)}/delete"><input type="hidden" name="csrf" value="${e(tokenFor(session))}">
<button class="danger" type="submit" id="confirm-delete">Delete for good</button> <a href="/">Cancel</a></form>`,
          ),
          headers,
        );
      }
      if (req.method !== 'POST') return send(res, 404, page('Not found', '<h1>Not found</h1>'));

      // Mutations: same origin, and the session's token.
      const from = req.headers.origin;
      if (from !== undefined && from !== origin && from !== origin.replace('127.0.0.1', 'localhost')) {
        log.warn('admin: cross-origin request refused', { origin: from.slice(0, 100) });
        return forbidden(res, 'cross-origin request');
      }
      const form = await readForm(req);
      if (!form) return forbidden(res, 'form too large');
      if (!sessionOf(req) || !secretsEqual(form.get('csrf') ?? '', tokenFor(session))) {
        log.warn('admin: request without a valid token refused');
        return forbidden(res, 'missing or invalid token');
      }
      if (url.pathname === '/identities') {
        const uuid = (form.get('uuid') ?? '').trim() || undefined;
        const label = (form.get('label') ?? '').trim().slice(0, 100) || undefined;
        const id = await provisionIdentity(opts.store, { uuid, label });
        // Whatever a POST changed shows on the very next page, not after the cache's moment.
        gathered = undefined;
        log.info('admin: identity created', { uuid: id.uuid });
        return send(res, 200, await secretPage(id, 'Created'), headers);
      }
      const m = /^\/identities\/([^/]+)\/(rotate|disable|enable|delete|unlock)$/.exec(url.pathname);
      if (!m) return send(res, 404, page('Not found', '<h1>Not found</h1>'));
      const uuid = checkUuid(decodeURIComponent(m[1] as string));
      const verb = m[2] as string;
      if (verb === 'rotate') {
        const rotated = await rotateIdentitySecret(opts.store, uuid);
        gathered = undefined;
        log.info('admin: secret rotated', { uuid });
        return send(res, 200, await secretPage(rotated, 'New secret'), headers);
      }
      if (verb === 'delete') await opts.store.deleteIdentity(uuid);
      else if (verb === 'unlock') await opts.store.unlockIdentity(uuid);
      else await setIdentityDisabled(opts.store, uuid, verb === 'disable');
      gathered = undefined;
      log.info(verb === 'unlock' ? 'admin: identity unlocked' : `admin: identity ${verb}d`, { uuid });
      res.writeHead(303, { location: '/', 'cache-control': 'no-store', ...headers });
      res.end();
    } catch (err) {
      const message = isRendezvousError(err) ? err.message : 'internal error';
      if (!isRendezvousError(err)) log.error('admin: request failed', { error: String(err) });
      send(
        res,
        isRendezvousError(err, 'ALREADY_EXISTS') ? 409 : isRendezvousError(err) ? 400 : 500,
        page('Error', `<h1>Error</h1><p>${e(message)}</p><p><a href="/">Back</a></p>`),
      );
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? ADMIN_PORT, '127.0.0.1', () => resolve());
  });
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: origin,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
