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
import { Transform } from 'node:stream';
import { isRendezvousError } from '../core/errors.js';
import {
  encodeResponse,
  HeadDecoder,
  HttpError,
  headerValue,
  MAX_HEAD,
  namedHiddenServer,
  parseConnectTarget,
  parseRequestHead,
  RequestBodyFramer,
  type RequestHead,
  serializeHead,
} from '../core/http-head.js';
import { authenticateConnect } from '../server/connect-auth.js';
import { checkUuid } from '../server/identities.js';
import type { RelayContext } from './context.js';
import { claimHiddenServer } from './pairing.js';
import { isGone } from './parking.js';
import { endWith } from './refuse.js';
import { encodeRedirect, namedBy, redirectLocation } from './regions.js';
import { readHandshake } from './session.js';
import { newRid, type RefusalReason, type RendezvousStart, refusalReason } from './telemetry.js';

/** Header of a CONNECT's 200 carrying the cookie later CONNECTs may use instead of a code. */
export const COOKIE_HEADER = 'Rendezvous-Cookie';
/** Header the relay adds to the request head it forwards to the hidden server: the rendezvous's rid. */
export const RID_HEADER = 'Rendezvous-Id';
/** Header of a CONNECT by which an agent reports its target `up` or `down` (optional). */
export const TARGET_HEADER = 'Rendezvous-Target';

const STATUS_OF: Record<string, number> = {
  HANDSHAKE_TIMEOUT: 408,
  BUSY: 503,
  AUTH_FAILED: 401,
  TOO_MANY_ATTEMPTS: 429,
  STORE_UNAVAILABLE: 503,
  BAD_REQUEST: 400,
};

/** Answers with an HTTP error (JSON body) and closes after it is flushed. */
export function respondError(
  socket: Socket,
  status: number,
  diagnostic: string,
  headers: Record<string, string> = {},
): void {
  // 404 (not parked now), 408, 429 and 5xx may go away on a retry; the rest will not.
  const permanent = ![404, 408, 429].includes(status) && status < 500;
  endWith(socket, encodeResponse(status, headers, { permanent, diagnostic }));
}

/** The HTTP port's one way of saying no: a refusal record, then the HTTP error. */
function refuseHttp(
  socket: Socket,
  ctx: RelayContext,
  reason: RefusalReason,
  status: number,
  diagnostic: string,
  uuid?: string,
  headers?: Record<string, string>,
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
    respondError(socket, STATUS_OF[err.code] as number, err.message, headers);
  } else {
    ctx.log.error('http session failed', { error: String(err) });
    respondError(socket, 500, 'internal error');
  }
}

/** Runs one connection on the HTTP port. */
export function startHttpSession(socket: Socket, ctx: RelayContext): void {
  const acceptedAt = Date.now();
  const decoder = new HeadDecoder();
  readHandshake(
    socket,
    ctx,
    (chunk) => decoder.push(chunk),
    ({ text, rest }) => {
      let head: RequestHead;
      try {
        head = parseRequestHead(text);
      } catch (err) {
        return respondRendezvousError(socket, err, ctx);
      }
      // The uuid a failure concerns, once known (refusal records name it).
      const about: { uuid?: string } = {};
      const run =
        head.method === 'CONNECT'
          ? parkConnect(socket, ctx, head, rest, acceptedAt, about)
          : pairHttpMobile(socket, ctx, head, rest, acceptedAt, about);
      run.catch((err) => respondRendezvousError(socket, err, ctx, about.uuid));
    },
    (err) => respondRendezvousError(socket, err, ctx),
  );
}

async function parkConnect(
  socket: Socket,
  ctx: RelayContext,
  head: RequestHead,
  rest: Buffer,
  acceptedAt: number,
  about: { uuid?: string },
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
    grant = await authenticateConnect(
      ctx.store,
      ctx.connectPolicy,
      target.uuid,
      { response: target.response, cookie: target.cookie, source: socket.remoteAddress },
      async (uuid, step) =>
        ctx.lot.hasParkWithStep(uuid, step) || (await remoteParkWithStep(ctx, uuid, step)),
      Date.now(),
      ctx.home,
    );
  } finally {
    socket.off('data', onEarly);
    socket.pause();
  }
  if (early) return refuseHttp(socket, ctx, 'early_data', 409, 'data sent before 200', grant.uuid);
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
    (p) => p.socket.destroy(),
  );
  if (!parked) socket.destroy();
  else ctx.telemetry.handshake('http', acceptedAt);
}

async function remoteParkWithStep(ctx: RelayContext, uuid: string, step: number): Promise<boolean> {
  if (!ctx.cluster) return false;
  const records = await ctx.cluster.records.others('http', uuid);
  return records.some((r) => r.step === step);
}

async function pairHttpMobile(
  socket: Socket,
  ctx: RelayContext,
  head: RequestHead,
  rest: Buffer,
  acceptedAt: number,
  about: { uuid?: string },
): Promise<void> {
  const id = namedHiddenServer(head, ctx.httpDomain);
  if (!id) {
    const nonce = randomBytes(16).toString('hex');
    // A normal step (curl --digest asks first without credentials): counted, logged at INFO.
    return refuseHttp(
      socket,
      ctx,
      'no_name',
      401,
      'name the hidden server: ?rendezvous=<ID> or a Digest/Basic username',
      undefined,
      { 'WWW-Authenticate': `Digest realm="rendezvous", qop="auth", nonce="${nonce}", algorithm=MD5` },
    );
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
    (await redirectElsewhere(socket, ctx, head, id, true))
  )
    return;
  ctx.perUuid.check(id);
  const cluster = ctx.cluster && known ? ctx.cluster : undefined;
  const rid = newRid();
  const claimed = await claimHiddenServer(
    ctx.lot,
    cluster,
    'http',
    id,
    ctx.limits.pairWaitMs,
    () => socket.destroyed,
    () => ctx.waiting.enter(socket),
    { rid, relayId: ctx.relayId, onPeerAnswer: (ms) => ctx.telemetry.peerAnswered(ms) },
  );
  if (!claimed) {
    // It may have parked in another region meanwhile: a redirect, never a 404 while it is online.
    if (ctx.regions && known && (await redirectElsewhere(socket, ctx, head, id, false))) return;
    return refuseHttp(socket, ctx, 'not_found', 404, 'hidden server not parked', id);
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
  const responses = new OneResponseGate(head.method === 'HEAD', (switched) => requests.decide(switched));
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
    toHiddenBefore: forwarded.length + rest.length,
    startedAt: Date.now(),
  };
  ctx.spliceHidden(hidden, socket, start, { intoHidden: requests, intoMobile: responses });
}

/**
 * Answers `307` to the relay of another region holding `id` (see relay/regions.ts); false when no
 * other region holds it — or, with `onlyIfNoneHere`, when a relay of this region does too.
 */
async function redirectElsewhere(
  socket: Socket,
  ctx: RelayContext,
  head: RequestHead,
  id: string,
  onlyIfNoneHere: boolean,
): Promise<boolean> {
  const regions = ctx.regions;
  if (!regions) return false;
  const away = await regions.elsewhere('http', id).catch(() => []);
  if (away.length === 0) return false;
  if (onlyIfNoneHere && (await regions.others('http', id).catch(() => [])).length > 0) return false;
  const by = namedBy(head, ctx.httpDomain);
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

/**
 * Passes the mobile client's bytes to the hidden server up to the end of the first request's
 * body, and drops whatever follows (another request, perhaps for another hidden server) unless
 * the connection was upgraded. Dropping rather than ending: a hidden server that sees the mobile
 * side's FIN mid-answer may abort its answer.
 */
class OneRequestGate extends Transform {
  private held: Buffer[] = [];
  private heldBytes = 0;
  /** Upgrades: undecided until the hidden server's status line; then pass-through or drop. */
  private upgraded: boolean | undefined;

  constructor(
    private readonly framer: RequestBodyFramer,
    private readonly upgrade: boolean,
  ) {
    super();
    this.upgraded = upgrade ? undefined : false;
  }

  /** The hidden server answered 101 (pass the rest through, upgrades only) or a final status. */
  decide(switched: boolean): void {
    if (this.upgraded !== undefined) return;
    this.upgraded = switched;
    if (switched) for (const b of this.held) this.push(b);
    this.held = [];
    this.heldBytes = 0;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    if (this.upgraded) {
      this.push(chunk);
      done();
      return;
    }
    const body = this.framer.done ? 0 : this.framer.push(chunk);
    if (body > 0) this.push(chunk.subarray(0, body));
    const after = chunk.subarray(body);
    if (after.length > 0 && this.upgrade && this.upgraded === undefined && this.heldBytes < MAX_HEAD) {
      this.held.push(after);
      this.heldBytes += after.length;
    }
    done();
  }
}

/** Largest response head the relay rewrites; a larger one passes through unchanged. */
const MAX_RESPONSE_HEAD = 64 * 1024;

/**
 * Reads the hidden server's answer so that the mobile client sees `Connection: close` on it and
 * the connection ends right after it, whatever the hidden server does with keep-alive. Interim
 * answers (1xx) pass unchanged; a 101 turns the connection into a tunnel; an answer the relay
 * cannot read (no head within 64 KiB) passes through unchanged until the hidden server closes.
 */
class OneResponseGate extends Transform {
  private head: Buffer[] = [];
  private headBytes = 0;
  private mode: 'head' | 'body' | 'through' | 'done' = 'head';
  private framer: RequestBodyFramer | undefined;

  constructor(
    private readonly noBody: boolean,
    private readonly onStatus: (switched: boolean) => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    let rest = chunk;
    while (rest.length > 0) {
      if (this.mode === 'through') {
        this.push(rest);
        break;
      }
      if (this.mode === 'done') break;
      if (this.mode === 'body') {
        const n = (this.framer as RequestBodyFramer).push(rest);
        if (n > 0) this.push(rest.subarray(0, n));
        rest = rest.subarray(n);
        if ((this.framer as RequestBodyFramer).done) this.finish();
        continue;
      }
      rest = this.readHead(rest);
    }
    done();
  }

  /** Buffers head bytes; once the head is whole, forwards it (rewritten) and returns what follows. */
  private readHead(chunk: Buffer): Buffer {
    this.head.push(chunk);
    this.headBytes += chunk.length;
    const all = Buffer.concat(this.head, this.headBytes);
    const end = all.indexOf('\r\n\r\n', 0, 'latin1');
    if (end === -1) {
      if (this.headBytes > MAX_RESPONSE_HEAD) this.passThrough(all);
      return Buffer.alloc(0);
    }
    this.head = [];
    this.headBytes = 0;
    const text = all.subarray(0, end).toString('latin1');
    const after = all.subarray(end + 4);
    const status = /^HTTP\/1\.[01] ([0-9]{3})/.exec(text);
    if (!status) {
      this.passThrough(all);
      return Buffer.alloc(0);
    }
    const code = Number(status[1]);
    if (code === 101) {
      this.onStatus(true);
      this.push(all);
      this.mode = 'through';
      return Buffer.alloc(0);
    }
    if (code < 200) {
      // 100 Continue, 103 Early Hints: the final answer is still to come.
      this.push(all.subarray(0, end + 4));
      return after;
    }
    this.onStatus(false);
    const lines = text.split('\r\n');
    const kept = lines.filter((l, i) => i === 0 || !/^(connection|keep-alive)\s*:/i.test(l));
    this.push(Buffer.from(`${[...kept, 'Connection: close'].join('\r\n')}\r\n\r\n`, 'latin1'));
    const value = (name: string) =>
      lines
        .find((l) => l.toLowerCase().startsWith(`${name}:`))
        ?.slice(name.length + 1)
        .trim();
    const te = value('transfer-encoding');
    const length = value('content-length');
    if (this.noBody || code === 204 || code === 304) {
      this.finish();
    } else if (te && te.split(',').pop()?.trim().toLowerCase() === 'chunked') {
      this.framer = new RequestBodyFramer({ chunked: true, length: 0 });
      this.mode = 'body';
    } else if (!te && length !== undefined && /^[0-9]{1,15}$/.test(length)) {
      this.framer = new RequestBodyFramer({ chunked: false, length: Number(length) });
      this.mode = 'body';
      if (this.framer.done) this.finish();
    } else {
      // Delimited by the close: pass everything until the hidden server ends.
      this.mode = 'through';
    }
    return after;
  }

  private passThrough(bytes: Buffer): void {
    this.head = [];
    this.headBytes = 0;
    this.onStatus(false);
    this.push(bytes);
    this.mode = 'through';
  }

  /** The answer is complete: end the mobile side (its `Connection: close` said so). */
  private finish(): void {
    this.mode = 'done';
    this.push(null);
  }
}
