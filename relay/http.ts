/**
 * The HTTP-specific protocol on the relay's HTTP port. A hidden server parks with
 * `CONNECT uuid:<ID>?response=<TOTP>` (or `?cookie=<c>`) and waits after `200 OK`; any other
 * request is a mobile client naming the hidden server by `?rendezvous=<ID>`, a Digest username
 * or a Basic user: its head (without `Authorization`) and what follows go to a parked socket,
 * then the two are spliced. CONNECT never dials anywhere: its target is an identity, not an address.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { type Duplex, Transform } from 'node:stream';
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
import { authenticateConnect, checkUuid } from '../core/registration.js';
import type { RelayContext } from './context.js';
import { claimHiddenServer } from './pairing.js';
import { isGone } from './parking.js';
import { endWith } from './refuse.js';
import { readHandshake } from './session.js';

/** Header of a CONNECT's 200 carrying the cookie later CONNECTs may use instead of a code. */
export const COOKIE_HEADER = 'Rendezvous-Cookie';

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

/** The one place where errors become HTTP responses on the relay's HTTP port. */
function respondRendezvousError(socket: Socket, err: unknown, ctx: RelayContext): void {
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
      const run =
        head.method === 'CONNECT'
          ? parkConnect(socket, ctx, head, rest)
          : pairHttpMobile(socket, ctx, head, rest);
      run.catch((err) => respondRendezvousError(socket, err, ctx));
    },
    (err) => respondRendezvousError(socket, err, ctx),
  );
}

async function parkConnect(
  socket: Socket,
  ctx: RelayContext,
  head: RequestHead,
  rest: Buffer,
): Promise<void> {
  const target = parseConnectTarget(head.target);
  checkUuid(target.uuid);
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
      { response: target.response, cookie: target.cookie },
      async (uuid, step) =>
        ctx.lot.hasParkWithStep(uuid, step) || (await remoteParkWithStep(ctx, uuid, step)),
    );
  } finally {
    socket.off('data', onEarly);
    socket.pause();
  }
  if (early) return respondError(socket, 409, 'data sent before 200');
  // Hung up while its code was checked: nothing to park (and nobody to answer).
  if (isGone(socket)) {
    socket.destroy();
    return;
  }
  socket.write(`HTTP/1.1 200 OK\r\n${COOKIE_HEADER}: ${grant.cookie}\r\n\r\n`);
  const parked = ctx.lot.park(
    { socket, kind: 'http', key: grant.uuid, uuid: grant.uuid, step: grant.step },
    (p) => p.socket.destroy(),
  );
  if (!parked) socket.destroy();
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
): Promise<void> {
  const id = namedHiddenServer(head, ctx.httpDomain);
  if (!id) {
    const nonce = randomBytes(16).toString('hex');
    return respondError(socket, 401, 'name the hidden server: ?rendezvous=<ID> or a Digest/Basic username', {
      'WWW-Authenticate': `Digest realm="rendezvous", qop="auth", nonce="${nonce}", algorithm=MD5`,
    });
  }
  checkUuid(id);
  ctx.perUuid.check(id);
  // A name that is no identity is still waited for (so timing does not tell which names exist),
  // but only here: no store polling for it.
  const cluster = ctx.cluster && (await ctx.names.known(id)) ? ctx.cluster : undefined;
  const hidden = await claimHiddenServer(
    ctx.lot,
    cluster,
    'http',
    id,
    ctx.limits.pairWaitMs,
    () => socket.destroyed,
    () => ctx.waiting.enter(socket),
  );
  if (!hidden) return respondError(socket, 404, 'hidden server not parked');
  if (socket.destroyed) {
    hidden.destroy();
    return;
  }
  const upgrade = isUpgrade(head);
  // One request per connection: the hidden server is told to close after its answer, and no
  // later request on this connection (which may name another hidden server) ever reaches it.
  hidden.write(
    upgrade
      ? serializeHead(head, ['authorization'])
      : serializeHead(head, ['authorization', 'connection', 'keep-alive'], [['Connection', 'close']]),
  );
  const gate = new OneRequestGate(new RequestBodyFramer(head), upgrade);
  if (upgrade) watchUpgrade(hidden, gate);
  if (rest.length > 0) gate.write(rest);
  ctx.spliceHidden(hidden, socket, id, gate);
}

/** True for a request asking to switch protocols (WebSocket): its tunnel stays with one hidden server. */
function isUpgrade(head: RequestHead): boolean {
  const connection = headerValue(head, 'connection') ?? '';
  return (
    headerValue(head, 'upgrade') !== undefined &&
    connection.split(',').some((t) => t.trim().toLowerCase() === 'upgrade')
  );
}

/** Opens the gate once the hidden server answers `101 Switching Protocols`, shuts it on anything else. */
function watchUpgrade(hidden: Duplex, gate: OneRequestGate): void {
  let status = '';
  const onData = (chunk: Buffer) => {
    status += chunk.subarray(0, 16).toString('latin1');
    if (status.length < 12) return;
    hidden.off('data', onData);
    gate.decide(/^HTTP\/1\.[01] 101/.test(status));
  };
  hidden.on('data', onData);
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

  /** Upgrades only: the hidden server answered 101 (pass the rest through) or not (drop it). */
  decide(upgraded: boolean): void {
    this.upgraded = upgraded;
    if (upgraded) for (const b of this.held) this.push(b);
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
