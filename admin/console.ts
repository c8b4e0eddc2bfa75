/**
 * The operator console (`rendezvous admin`): a server-rendered page on 127.0.0.1 only, using the
 * operator's own credentials against the table. Lists identities with their registration and
 * whether a relay holds them parked; creates, rotates, disables, enables and deletes them. A new
 * or rotated secret is shown exactly once (with a QR code of its otpauth URI) and never appears
 * in a list, a log or a URL. Mutations need the session's CSRF token and a same-origin request.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import escapeHtml from 'escape-html';
import QRCode from 'qrcode';
import { secretsEqual } from '../core/cookies.js';
import { isRendezvousError } from '../core/errors.js';
import { type Log, silentLog } from '../core/log.js';
import {
  checkUuid,
  type ProvisionedIdentity,
  provisionIdentity,
  rotateIdentitySecret,
  setIdentityDisabled,
} from '../core/registration.js';
import type { Identity, Store } from '../core/store.js';
import type { TotpCompat } from '../core/totp.js';
import { PARK_RECORD_TTL_SECONDS } from '../relay/park-records.js';

/** Default port of the console. */
export const ADMIN_PORT = 8893;
const MAX_FORM = 8 * 1024;

/** What the console shows per identity (no secret). */
export interface IdentityRow {
  uuid: string;
  label?: string;
  createdAt: number;
  disabled: boolean;
  lastRegistration?: number;
  region?: string;
  /** Relays (peer addresses) holding parked sockets now. */
  parkedOn: string[];
  lastSeen?: number;
  /** Compatibility settings (imported from node-rendezvous), in words; absent for strict identities. */
  compat?: string;
  importedFrom?: string;
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

/** Gathers the rows: identity, registration, park records. */
export async function identityRows(store: Store, nowMs = Date.now()): Promise<IdentityRow[]> {
  const identities = await store.listIdentities();
  return Promise.all(
    identities.map(async (id: Identity) => {
      const reg = await store.getRegistrationRecord(id.uuid);
      const parks = [
        ...(reg ? await store.listParks('generic', reg.cookie, nowMs) : []),
        ...(await store.listParks('http', id.uuid, nowMs)),
      ];
      // A park record is rewritten at least every third of its TTL: written no earlier than this.
      const seen = [reg?.registeredAt, ...parks.map((p) => p.expiresAt - PARK_RECORD_TTL_SECONDS)].filter(
        (v): v is number => v !== undefined,
      );
      return {
        uuid: id.uuid,
        label: id.label,
        createdAt: id.createdAt,
        disabled: Boolean(id.disabled),
        lastRegistration: reg?.registeredAt,
        region: reg?.region,
        parkedOn: [...new Set(parks.map((p) => p.peer || `relay ${p.relayId.slice(0, 8)}`))],
        lastSeen: seen.length ? Math.max(...seen) : undefined,
        compat: id.compat ? describeCompat(id.compat) : undefined,
        importedFrom: id.compat?.importedFrom,
      };
    }),
  );
}

const when = (sec?: number) =>
  sec ? new Date(sec * 1000).toISOString().replace('T', ' ').slice(0, 19) : '—';
const e = (s: unknown) => escapeHtml(String(s ?? ''));

const STYLE = `body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1d2330}
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e3e6ec;vertical-align:top}
.online{color:#127a3a;font-weight:600}.imported{color:#8a4b00;font-weight:600}.offline{color:#8a93a3}.disabled{color:#b42318;font-weight:600}
form.inline{display:inline}button{font:inherit;padding:.25rem .7rem;border-radius:6px;border:1px solid #b9c0cc;background:#fff;cursor:pointer}
button.danger{border-color:#d92d20;color:#b42318}input{font:inherit;padding:.3rem .5rem;border:1px solid #b9c0cc;border-radius:6px}
.card{border:1px solid #e3e6ec;border-radius:10px;padding:1rem 1.2rem;margin:1rem 0}.secret{font:600 1.1rem ui-monospace,monospace;background:#f4f6fa;padding:.4rem .6rem;border-radius:6px}
pre{background:#f4f6fa;padding:.8rem;border-radius:8px;overflow-x:auto}.qr svg{width:12rem;height:12rem}.muted{color:#5b6475}`;

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${e(title)} — rendezvous</title><style>${STYLE}</style></head><body>${body}</body></html>`;
}

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
  log?: Log;
}): Promise<AdminConsole> {
  const log = opts.log ?? silentLog;
  const key = randomBytes(32);
  const tokenFor = (session: string) => createHmac('sha256', key).update(session).digest('base64url');
  let origin = '';

  const sessionOf = (req: IncomingMessage) =>
    /(?:^|;\s*)rv_session=([A-Za-z0-9_-]{20,})/.exec(req.headers.cookie ?? '')?.[1];

  const send = (res: ServerResponse, status: number, html: string, headers: Record<string, string> = {}) => {
    res.writeHead(status, {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'content-security-policy':
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'",
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

  const listPage = async (session: string, q: string, notice = '') => {
    const rows = (await identityRows(opts.store)).filter(
      (r) =>
        !q ||
        r.uuid.toLowerCase().includes(q.toLowerCase()) ||
        (r.label ?? '').toLowerCase().includes(q.toLowerCase()),
    );
    const csrf = `<input type="hidden" name="csrf" value="${e(tokenFor(session))}">`;
    const action = (uuid: string, verb: string, label: string, cls = '') =>
      `<form class="inline" method="post" action="/identities/${encodeURIComponent(uuid)}/${verb}">${csrf}<button ${cls} type="submit" data-action="${verb}">${label}</button></form>`;
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
<td class="status">${
          r.disabled
            ? '<span class="disabled">disabled</span>'
            : r.parkedOn.length
              ? `<span class="online">online</span> <span class="muted">${r.parkedOn.map(e).join(', ')}</span>`
              : '<span class="offline">offline</span>'
        }</td><td>${when(r.lastSeen)}</td>
<td>${action(r.uuid, 'rotate', 'Rotate secret')} ${r.disabled ? action(r.uuid, 'enable', 'Enable') : action(r.uuid, 'disable', 'Disable')}
<a href="/identities/${encodeURIComponent(r.uuid)}/delete"><button type="button" class="danger">Delete…</button></a></td></tr>`,
      )
      .join('\n');
    return page(
      'Hidden servers',
      `<h1>Hidden servers</h1>${notice}
<div class="card"><form method="post" action="/identities">${csrf}
<label>Label <input name="label" maxlength="100" placeholder="Ann's laptop"></label>
<label>UUID <input name="uuid" maxlength="128" placeholder="(random)"></label>
<button type="submit" id="create">Create identity</button></form></div>
<form method="get" action="/"><input name="q" value="${e(q)}" placeholder="Filter by uuid or label"> <button type="submit">Filter</button></form>
<table id="identities"><thead><tr><th>UUID</th><th>Label</th><th>Created</th><th>Codes</th><th>Last registration</th><th>Now</th><th>Last seen</th><th></th></tr></thead>
<tbody>${body || '<tr><td colspan="8" class="muted">No identities yet.</td></tr>'}</tbody></table>`,
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
        return send(res, 200, await listPage(session, url.searchParams.get('q') ?? ''), headers);
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
        log.info('admin: identity created', { uuid: id.uuid });
        return send(res, 200, await secretPage(id, 'Created'), headers);
      }
      const m = /^\/identities\/([^/]+)\/(rotate|disable|enable|delete)$/.exec(url.pathname);
      if (!m) return send(res, 404, page('Not found', '<h1>Not found</h1>'));
      const uuid = checkUuid(decodeURIComponent(m[1] as string));
      const verb = m[2] as string;
      if (verb === 'rotate') {
        const rotated = await rotateIdentitySecret(opts.store, uuid);
        log.info('admin: secret rotated', { uuid });
        return send(res, 200, await secretPage(rotated, 'New secret'), headers);
      }
      if (verb === 'delete') await opts.store.deleteIdentity(uuid);
      else await setIdentityDisabled(opts.store, uuid, verb === 'disable');
      log.info(`admin: identity ${verb}d`, { uuid });
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
