/**
 * The operator console (`rendezvous admin`): a server-rendered page on 127.0.0.1 only, using the
 * operator's own credentials against the table. Lists identities with their registration and, per
 * protocol, what the store knows live: parked sockets and on which relay (its public address and
 * region), the agent-reported target state, the last rendezvous and its outcome; and each
 * identity's lockout (wrong-code guesses) with an unlock action. Creates, rotates, disables,
 * enables and deletes identities. A new or rotated secret is shown exactly once (with a QR code of
 * its otpauth URI) and never appears in a list, a log or a URL. Mutations need the session's CSRF
 * token and a same-origin request. The list refreshes itself every REFRESH_MS (a small script with
 * a per-response nonce); `GET /api/servers` gives the same figures as JSON. Each identity's usage
 * (today, this month, the last 30 days) and limits are on `GET /identities/<uuid>/usage`, whose
 * form posts to `/identities/<uuid>/limits`, and as JSON on `GET /api/identities/<uuid>/usage`.
 * Times are UTC ISO 8601.
 *
 * This file is the HTTP server: its routes, the Host and origin checks, sessions and tokens. The
 * rows come from admin/rows.ts, the HTML from admin/page.ts.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isRendezvousError } from '../core/errors.js';
import { type Log, silentLog } from '../core/log.js';
import { authPolicyFromEnv } from '../server/config.js';
import { secretsEqual } from '../server/cookies.js';
import {
  checkUuid,
  deleteIdentity,
  provisionIdentity,
  rotateIdentitySecret,
  setIdentityDisabled,
  unlockIdentity,
} from '../server/identities.js';
import type { FailurePolicy } from '../server/limits.js';
import type { Store } from '../server/store/index.js';
import {
  confirmPage,
  errorPage,
  forbiddenPage,
  listPage,
  notFoundPage,
  rowsHtml,
  secretPage,
  usagePage,
} from './page.js';
import { type RowOrder, rowSource, utc } from './rows.js';
import { formMessage, limitsFromForm, usageView } from './usage-view.js';

/** Default port of the console. */
export const ADMIN_PORT = 8893;
const MAX_FORM = 8 * 1024;

/** A running console. */
export interface AdminConsole {
  url: string;
  close(): Promise<void>;
}

const sessionOf = (req: IncomingMessage) =>
  /(?:^|;\s*)rv_session=([A-Za-z0-9_-]{20,})/.exec(req.headers.cookie ?? '')?.[1];

function send(
  res: ServerResponse,
  status: number,
  html: string,
  headers: Record<string, string> = {},
  /** Admits the page's own script (and its fetches of this origin); other pages run none. */
  nonce?: string,
): void {
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
}

const forbidden = (res: ServerResponse, why: string) => send(res, 403, forbiddenPage(why));

/** A JSON answer (the console's views for scripts). */
function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.end(JSON.stringify(body));
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_FORM) return undefined;
    chunks.push(c);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
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
  const rows = rowSource(opts.store, failures);

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
      const q = url.searchParams.get('q') ?? '';
      const order: RowOrder = url.searchParams.get('sort') === 'usage' ? 'usage' : 'default';
      if (req.method === 'GET' && url.pathname === '/') {
        const nonce = randomBytes(16).toString('base64');
        const html = listPage(await rows.rows(q, order), { q, nonce, csrf: tokenFor(session), order });
        return send(res, 200, html, headers, nonce);
      }
      if (req.method === 'GET' && url.pathname === '/rows') {
        return send(res, 200, rowsHtml(await rows.rows(q, order), tokenFor(session)), headers);
      }
      if (req.method === 'GET' && url.pathname === '/api/servers') {
        return sendJson(res, 200, { at: utc(Date.now()), servers: await rows.rows(q, order) });
      }
      // One identity's usage and limits: as JSON for scripts, and as a page with the limits form.
      const usage = /^\/(api\/)?identities\/([^/]+)\/usage$/.exec(url.pathname);
      if (req.method === 'GET' && usage) {
        const json = Boolean(usage[1]);
        let uuid: string;
        try {
          uuid = checkUuid(decodeURIComponent(usage[2] as string));
        } catch (err) {
          if (!json || !isRendezvousError(err)) throw err;
          return sendJson(res, 400, { error: err.message });
        }
        const view = await usageView(opts.store, uuid);
        if (json) return sendJson(res, view ? 200 : 404, view ?? { error: 'no such identity' });
        if (!view) return send(res, 404, notFoundPage());
        const saved = url.searchParams.get('saved') === '1';
        return send(res, 200, usagePage(view, tokenFor(session), { saved }), headers);
      }
      // Delete and disable ask first: a GET shows the confirmation, whose form posts.
      const ask = /^\/identities\/([^/]+)\/(delete|disable)$/.exec(url.pathname);
      if (req.method === 'GET' && ask) {
        const uuid = checkUuid(decodeURIComponent(ask[1] as string));
        return send(res, 200, confirmPage(ask[2] as 'delete' | 'disable', uuid, tokenFor(session)), headers);
      }
      if (req.method !== 'POST') return send(res, 404, notFoundPage());

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
        rows.forget();
        log.info('admin: identity created', { uuid: id.uuid });
        return send(res, 200, await secretPage(id, 'Created', opts.apiUrl), headers);
      }
      const limits = /^\/identities\/([^/]+)\/limits$/.exec(url.pathname);
      if (limits) {
        const uuid = checkUuid(decodeURIComponent(limits[1] as string));
        const view = await usageView(opts.store, uuid);
        if (!view) return send(res, 404, notFoundPage());
        let set: ReturnType<typeof limitsFromForm>;
        try {
          set = limitsFromForm(form);
          // The store writes the change notice first, then the identity: relays re-read within a
          // round. It checks the ranges again (a refusal there stores nothing either).
          await opts.store.setLimits(uuid, set);
        } catch (err) {
          if (!isRendezvousError(err)) throw err;
          // Refused: nothing is stored; the page says why and keeps what was typed.
          const values = { quota: form.get('quota') ?? '', bandwidth: form.get('bandwidth') ?? '' };
          const page = usagePage(view, tokenFor(session), {
            error: formMessage(err.message),
            values: { ...values, 'max-concurrent': form.get('max-concurrent') ?? '' },
          });
          return send(res, 400, page, headers);
        }
        rows.forget();
        log.info('admin: limits set', { uuid, limits: JSON.stringify(set) });
        res.writeHead(303, {
          location: `/identities/${encodeURIComponent(uuid)}/usage?saved=1`,
          'cache-control': 'no-store',
          ...headers,
        });
        return res.end();
      }
      const m = /^\/identities\/([^/]+)\/(rotate|disable|enable|delete|unlock)$/.exec(url.pathname);
      if (!m) return send(res, 404, notFoundPage());
      const uuid = checkUuid(decodeURIComponent(m[1] as string));
      const verb = m[2] as string;
      if (verb === 'rotate') {
        const rotated = await rotateIdentitySecret(opts.store, uuid);
        rows.forget();
        log.info('admin: secret rotated', { uuid });
        return send(res, 200, await secretPage(rotated, 'New secret', opts.apiUrl), headers);
      }
      if (verb === 'delete') await deleteIdentity(opts.store, uuid);
      else if (verb === 'unlock') await unlockIdentity(opts.store, uuid);
      else await setIdentityDisabled(opts.store, uuid, verb === 'disable');
      rows.forget();
      log.info(verb === 'unlock' ? 'admin: identity unlocked' : `admin: identity ${verb}d`, { uuid });
      res.writeHead(303, { location: '/', 'cache-control': 'no-store', ...headers });
      res.end();
    } catch (err) {
      const message = isRendezvousError(err) ? err.message : 'internal error';
      if (!isRendezvousError(err)) log.error('admin: request failed', { error: String(err) });
      send(
        res,
        isRendezvousError(err, 'ALREADY_EXISTS') ? 409 : isRendezvousError(err) ? 400 : 500,
        errorPage(message),
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
