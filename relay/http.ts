/**
 * The HTTP-specific protocol on the relay's HTTP port. A hidden server parks with
 * `CONNECT uuid:<ID>?response=<TOTP>` (or `?cookie=<c>`) and waits after `200 OK`; any other
 * request is a mobile client naming the hidden server by its Host (`<ID>.<httpDomain>`),
 * `?rendezvous=<ID>`, a Digest username or a Basic user: its head (without `Authorization`, with
 * `Connection: close`) and its body go to a parked socket, the answer comes back with
 * `Connection: close`, and the connection ends after it — one request per connection, so a
 * keep-alive client's next request is routed afresh. CONNECT never dials anywhere: its target
 * is an identity, not an address.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { isRendezvousError } from '../core/errors.js';
import {
  COOKIE_HEADER,
  encodeResponse,
  HeadDecoder,
  HttpError,
  headerValue,
  namedHiddenServer,
  parseConnectTarget,
  parseRequestHead,
  RequestBodyFramer,
  type RequestHead,
  RID_HEADER,
  serializeHead,
  TARGET_HEADER,
} from '../core/http-head.js';
import { ownPermanence } from '../server/code-rule.js';
import { authenticateConnect } from '../server/connect-auth.js';
import { checkUuid } from '../server/identities.js';
import type { RelayContext } from './context.js';
import { inDomain, requestHost } from './host-origin.js';
import { OneRequestGate, OneResponseGate } from './http-gates.js';
import { claimHiddenServer } from './pairing.js';
import { isGone, type Parked } from './parking.js';
import { endWith } from './refuse.js';
import { encodeRedirect, namedBy, redirectLocation } from './regions.js';
import { readHandshake } from './session.js';
import { newRid, type RefusalReason, type RendezvousStart, refusalReason } from './telemetry.js';

const STATUS_OF: Record<string, number> = {
  HANDSHAKE_TIMEOUT: 408,
  BUSY: 503,
  AUTH_FAILED: 401,
  TOO_MANY_ATTEMPTS: 429,
  IDENTITY_DISABLED: 403,
  CODE_LENGTH_REFUSED: 400,
  QUOTA_EXCEEDED: 429,
  STORE_UNAVAILABLE: 503,
  BAD_REQUEST: 400,
};

/** Answers with an HTTP error (JSON body) and closes after it is flushed. */
export function respondError(
  socket: Socket,
  status: number,
  diagnostic: string,
  headers: Record<string, string> = {},
  /** Overrides the status's permanence (the code rule's answers: a compat identity's refusals are not). */
  permanentOverride?: boolean,
): void {
  // 404 (not parked now), 408, 429 and 5xx may go away on a retry; the rest will not.
  const permanent = permanentOverride ?? (![404, 408, 429].includes(status) && status < 500);
  endWith(socket, encodeResponse(status, headers, { permanent, diagnostic }));
}

/** Why an HTTP request is refused: the record's reason, the answer, the uuid when known. */
interface HttpRefusal {
  reason: RefusalReason;
  status: number;
  diagnostic: string;
  uuid?: string;
  headers?: Record<string, string>;
}

/** The HTTP port's one way of saying no: a refusal record, then the HTTP error. */
function refuseHttp(
  socket: Socket,
  ctx: RelayContext,
  { reason, status, diagnostic, uuid, headers }: HttpRefusal,
): void {
  ctx.telemetry.refused(reason, { protocol: 'http', uuid, source: socket.remoteAddress });
  respondError(socket, status, diagnostic, headers);
}

/** The one place where errors become HTTP responses on the relay's HTTP port. */
function respondRendezvousError(socket: Socket, err: unknown, ctx: RelayContext, uuid?: string): void {
  ctx.telemetry.refused(refusalReason(err), { protocol: 'http', uuid, source: socket.remoteAddress });
  if (err instanceof HttpError) {
    respondError(socket, err.status, err.message);
  } else if (isRendezvousError(err) && STATUS_OF[err.code]) {
    const headers: Record<string, string> = err.retryAfter ? { 'Retry-After': String(err.retryAfter) } : {};
    respondError(socket, STATUS_OF[err.code] as number, err.message, headers, ownPermanence(err));
  } else {
    ctx.log.error('http session failed', { error: String(err) });
    respondError(socket, 500, 'internal error');
  }
}

/** Runs one connection on the HTTP port. */
export function startHttpSession(socket: Socket, ctx: RelayContext): void {
  const acceptedAt = Date.now();
  const decoder = new HeadDecoder();
  readHandshake(socket, ctx, {
    decode: (chunk) => decoder.push(chunk),
    onDone: ({ text, rest }) => {
      let head: RequestHead;
      try {
        head = parseRequestHead(text);
      } catch (err) {
        return respondRendezvousError(socket, err, ctx);
      }
      const req: HttpRequest = { head, rest, acceptedAt, about: {} };
      const run =
        head.method === 'CONNECT' ? parkConnect(socket, ctx, req) : pairHttpMobile(socket, ctx, req);
      run.catch((err) => respondRendezvousError(socket, err, ctx, req.about.uuid));
    },
    onError: (err) => respondRendezvousError(socket, err, ctx),
  });
}

/** One request read on the HTTP port. */
interface HttpRequest {
  head: RequestHead;
  /** Bytes after the head (a mobile client's body). */
  rest: Buffer;
  acceptedAt: number;
  /** The uuid a failure concerns, once known (refusal records name it). */
  about: { uuid?: string };
}

async function parkConnect(
  socket: Socket,
  ctx: RelayContext,
  { head, rest, acceptedAt, about }: HttpRequest,
): Promise<void> {
  const target = parseConnectTarget(head.target);
  checkUuid(target.uuid);
  about.uuid = target.uuid;
  // The hidden server must wait for the 200; bytes before it (now or during the check) are a 409.
  let early = rest.length > 0;
  const onEarly = () => {
    early = true;
  };
  socket.on('data', onEarly);
  socket.resume();
  let grant: Awaited<ReturnType<typeof authenticateConnect>>;
  try {
    const claims = ctx.claims ? await ctx.claims.claims() : ctx.home;
    grant = await authenticateConnect(
      ctx.store,
      ctx.connectPolicy,
      target.uuid,
      { response: target.response, cookie: target.cookie, source: socket.remoteAddress },
      async (uuid, step) =>
        ctx.lot.hasParkWithStep(uuid, step) || (await remoteParkWithStep(ctx, uuid, step)),
      Date.now(),
      claims,
    );
  } finally {
    socket.off('data', onEarly);
    socket.pause();
  }
  if (early)
    return refuseHttp(socket, ctx, {
      reason: 'early_data',
      status: 409,
      diagnostic: 'data sent before 200',
      uuid: grant.uuid,
    });
  // After the code (a stranger learns nothing, and costs no usage read): an agent over its quota
  // is told so (429) rather than parked for clients that would be refused.
  await ctx.identityLimits.checkQuota(grant.uuid);
  // Hung up while its code was checked: nothing to park (and nobody to answer).
  if (isGone(socket)) {
    socket.destroy();
    return;
  }
  socket.write(`HTTP/1.1 200 OK\r\n${COOKIE_HEADER}: ${grant.cookie}\r\n\r\n`);
  ctx.keepAlive(socket);
  // An agent's report on its target (other values are ignored: the header is informational).
  const reported = headerValue(head, TARGET_HEADER)?.trim().toLowerCase();
  if (reported === 'up' || reported === 'down') ctx.records.noteTarget('http', grant.uuid, reported);
  const parked = ctx.lot.park(
    {
      socket,
      kind: 'http',
      key: grant.uuid,
      uuid: grant.uuid,
      step: grant.step,
      generation: grant.generation,
    },
    destroyEarly,
  );
  if (!parked) socket.destroy();
  else ctx.telemetry.handshake('http', acceptedAt);
}

/** A parked HTTP hidden server that sends before its rendezvous is cut (one function for every park, not a closure each). */
const destroyEarly = (p: Parked) => p.socket.destroy();

async function remoteParkWithStep(ctx: RelayContext, uuid: string, step: number): Promise<boolean> {
  if (!ctx.cluster) return false;
  const records = await ctx.cluster.records.others('http', uuid);
  return records.some((r) => r.step === step);
}

async function pairHttpMobile(
  socket: Socket,
  ctx: RelayContext,
  { head, rest, acceptedAt, about }: HttpRequest,
): Promise<void> {
  const host = requestHost(head);
  // Host routing: the parent name (or another name under it that names no tenant) is no tenant's
  // origin, so it serves none unless the operator shares it (relay/host-origin.ts).
  if (
    ctx.httpDomain &&
    !ctx.httpSharedOrigin &&
    inDomain(host, ctx.httpDomain) &&
    namedBy(head, ctx.httpDomain) !== 'host'
  )
    return refuseHttp(socket, ctx, {
      reason: 'not_host_routed',
      status: 403,
      diagnostic: `name the hidden server by its host: <ID>.${ctx.httpDomain}`,
    });
  const id = namedHiddenServer(head, ctx.httpDomain);
  if (!id) {
    const nonce = randomBytes(16).toString('hex');
    // A normal step (curl --digest asks first without credentials): counted, logged at INFO.
    return refuseHttp(socket, ctx, {
      reason: 'no_name',
      status: 401,
      diagnostic: 'name the hidden server: ?rendezvous=<ID> or a Digest/Basic username',
      headers: {
        'WWW-Authenticate': `Digest realm="rendezvous", qop="auth", nonce="${nonce}", algorithm=MD5`,
      },
    });
  }
  checkUuid(id);
  about.uuid = id;
  // A name that is no identity is still waited for (so timing does not tell which names exist),
  // but only here: no store polling or park-record reads for it (the answer is cached).
  const known = ctx.cluster || ctx.regions ? await ctx.names.known(id) : false;
  // Parked in another region only: send the client there at once rather than wait here.
  if (
    ctx.regions &&
    known &&
    ctx.lot.count('http', id) === 0 &&
    (await redirectElsewhere(socket, ctx, { head, id, onlyIfNoneHere: true }))
  )
    return;
  // Its limits before the cap (the cap may be its own), read with `known`'s read of the identity.
  // A name no identity has (or, on a lone relay, one parked nowhere here: the CONNECT that parks
  // it checks its quota) costs no read: a flood of made-up names reads nothing.
  if (known || ctx.lot.count('http', id) > 0) await ctx.identityLimits.checkQuota(id);
  ctx.perUuid.check(id, socket.remoteAddress);
  const cluster = ctx.cluster && known ? ctx.cluster : undefined;
  const rid = newRid();
  const claimed = await claimHiddenServer(ctx.lot, cluster, {
    kind: 'http',
    key: id,
    waitMs: ctx.limits.pairWaitMs,
    gone: () => socket.destroyed,
    beforeWait: () => ctx.waiting.enter(socket),
    request: { rid, relayId: ctx.relayId, onPeerAnswer: (ms) => ctx.telemetry.peerAnswered(ms) },
  });
  if (!claimed) {
    // It may have parked in another region meanwhile: a redirect, never a 404 while it is online.
    if (ctx.regions && known && (await redirectElsewhere(socket, ctx, { head, id, onlyIfNoneHere: false })))
      return;
    return refuseHttp(socket, ctx, {
      reason: 'not_found',
      status: 404,
      diagnostic: 'hidden server not parked',
      uuid: id,
    });
  }
  const hidden = claimed.stream;
  if (socket.destroyed) {
    hidden.destroy();
    return;
  }
  const upgrade = isUpgrade(head);
  // One request per connection: the hidden server is told to close after its answer, and no
  // later request on this connection (which may name another hidden server) ever reaches it.
  // The rid goes to the hidden server with the head (a client's own Rendezvous-Id is replaced).
  const forwarded = upgrade
    ? serializeHead(head, ['authorization', RID_HEADER], [[RID_HEADER, rid]])
    : serializeHead(
        head,
        ['authorization', 'connection', 'keep-alive', RID_HEADER],
        // Connection: close stays the head's last line, as before the rid was added.
        [
          [RID_HEADER, rid],
          ['Connection', 'close'],
        ],
      );
  hidden.write(forwarded);
  const requests = new OneRequestGate(new RequestBodyFramer(head), upgrade);
  // With host routing, an answer sets cookies for the host it was asked for only.
  const responses = new OneResponseGate(
    head.method === 'HEAD',
    (switched) => requests.decide(switched),
    ctx.httpDomain ? host : undefined,
  );
  if (rest.length > 0) requests.write(rest);
  ctx.telemetry.paired('http', claimed.peerRelayId ? 'peer' : 'local');
  ctx.telemetry.handshake('http', acceptedAt);
  const start: RendezvousStart = {
    rid,
    protocol: 'http',
    uuid: id,
    hops: claimed.peerRelayId ? 1 : 0,
    hiddenRelayId: claimed.peerRelayId ?? ctx.relayId,
    mobileRelayId: ctx.relayId,
    source: socket.remoteAddress,
    // What the gate passed of `rest` (its part of the request); anything after the request is dropped.
    toHiddenBefore: forwarded.length + requests.passed,
    startedAt: Date.now(),
  };
  ctx.spliceHidden(hidden, socket, start, {
    intoHidden: requests,
    intoMobile: responses,
    carriedToHidden: () => requests.passed,
  });
}

/**
 * Answers `307` to the relay of another region holding `id` (see relay/regions.ts); false when no
 * other region holds it — or, with `onlyIfNoneHere`, when a relay of this region does too.
 */
async function redirectElsewhere(
  socket: Socket,
  ctx: RelayContext,
  { head, id, onlyIfNoneHere }: { head: RequestHead; id: string; onlyIfNoneHere: boolean },
): Promise<boolean> {
  const regions = ctx.regions;
  if (!regions) return false;
  const away = await regions.elsewhere('http', id).catch(() => []);
  if (away.length === 0) return false;
  if (onlyIfNoneHere && (await regions.others('http', id).catch(() => [])).length > 0) return false;
  // With host routing and no shared origin, the other region's parent name serves no tenant
  // either: a request named by its query is sent to the hidden server's own host there.
  const named = namedBy(head, ctx.httpDomain);
  const by = named === 'query' && ctx.httpDomain && !ctx.httpSharedOrigin ? 'host' : named;
  for (const rec of away) {
    const location = redirectLocation(rec, head, id, by);
    if (!location) continue;
    ctx.log.info('redirected to another region', { uuid: id, region: rec.region });
    endWith(socket, encodeRedirect(location, rec.region));
    return true;
  }
  return false;
}

/** True for a request asking to switch protocols (WebSocket): its tunnel stays with one hidden server. */
function isUpgrade(head: RequestHead): boolean {
  const connection = headerValue(head, 'connection') ?? '';
  return (
    headerValue(head, 'upgrade') !== undefined &&
    connection.split(',').some((t) => t.trim().toLowerCase() === 'upgrade')
  );
}
