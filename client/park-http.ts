/**
 * The HTTP-specific protocol's park: a CONNECT to the relay's `http(s)://` endpoint with a code
 * (or, once one was accepted, the cookie its 200 carried), then wait for the first bytes of a
 * request. One parked CONNECT at a time until a cookie is known (codes are single-use), then the
 * cookie for every re-park and every pool slot.
 */
import type { Socket } from 'node:net';
import { RendezvousError } from '../core/errors.js';
import {
  COOKIE_HEADER,
  encodeConnect,
  forwardedRid,
  HeadDecoder,
  headerValue,
  parseResponseHead,
  type ResponseHead,
} from '../core/http-head.js';
import type { TargetState } from '../core/relay-line.js';
import { readPreamble } from '../core/socket-reader.js';
import type { SentCode } from './codes.js';
import type { ParkContext, Parker, ParkOutcome } from './parking.js';
import { connectHttpRelay } from './relay-conn.js';

/** Time allowed for the relay's answer to a CONNECT. */
const CONNECT_ANSWER_TIMEOUT_MS = 30_000;

/** Parks the HTTP-specific way; the cookie is shared by every slot of the pool. */
export class HttpParker implements Parker {
  private cookie: string | undefined;
  /** Pending while a slot authenticates with a code: the others wait for its cookie. */
  private codeInFlight: Promise<void> | undefined;
  private registeredOnce = false;
  /** The relay URL's host, as the Host header and the records name it. */
  private readonly relay: string;

  constructor(private readonly ctx: ParkContext) {
    this.relay = new URL(ctx.opts.relay as string).host;
  }

  /** One park of `slot`: a credential, the CONNECT, its answer, then the wait for a request. */
  async park(slot: number): Promise<ParkOutcome> {
    const ctx = this.ctx;
    while (!this.cookie && this.codeInFlight) await this.codeInFlight;
    if (ctx.stopped()) return { kind: 'stopped' };
    let release: (() => void) | undefined;
    const cookie = this.cookie;
    let sent: SentCode | undefined;
    if (!cookie) {
      this.codeInFlight = new Promise((r) => {
        release = () => {
          this.codeInFlight = undefined;
          r();
        };
      });
      try {
        sent = await ctx.codes.next();
      } catch {
        release?.();
        return { kind: 'stopped' };
      }
    }
    const relay = this.relay;
    let socket: Socket | undefined;
    let head: ResponseHead;
    let target: TargetState | undefined;
    let recycled = false;
    try {
      socket = await connectHttpRelay(ctx.opts.relay as string, ctx.signal);
      if (ctx.stopped()) {
        socket.destroy();
        release?.();
        return { kind: 'stopped' };
      }
      const s = socket;
      ctx.hold(s, relay, () => {
        recycled = true;
        s.destroy();
      });
      // Rendezvous-Target: what the relay shows operators about this agent's target.
      target = ctx.target();
      socket.write(
        encodeConnect(
          cookie
            ? { uuid: ctx.opts.uuid, cookie, host: relay, target }
            : { uuid: ctx.opts.uuid, response: sent?.code, host: relay, target },
        ),
      );
      const decoder = new HeadDecoder();
      head = await readPreamble(
        socket,
        (chunk) => {
          const d = decoder.push(chunk);
          return d && { value: parseResponseHead(d.text), rest: d.rest };
        },
        { what: 'answer to CONNECT', timeoutMs: CONNECT_ANSWER_TIMEOUT_MS, signal: ctx.signal },
      );
    } catch (err) {
      if (socket) {
        ctx.release(socket);
        socket.destroy();
      }
      release?.();
      if (ctx.stopped()) return { kind: 'stopped' };
      if (recycled) return { kind: 'again', cause: { after: 'target_changed' } };
      const reason = (err as Error).message;
      return {
        kind: 'retry',
        cause: { after: 'failure', reason },
        message: 'relay connection failed, retrying',
        fields: { relay },
      };
    }
    if (head.status === 200) return this.parked(slot, socket, head, sent, release, target, () => recycled);
    ctx.release(socket);
    socket.destroy();
    if (head.status === 401 && !sent) {
      this.cookie = undefined; // expired or revoked: authenticate with a code again
      return { kind: 'again', cause: { after: 'refusal', reason: 'cookie refused (401)' } };
    }
    release?.();
    if (head.status === 401 && sent && !ctx.codes.refused(sent)) return { kind: 'again' };
    if (head.status === 401 || head.status === 403 || head.status === 400) {
      return {
        kind: 'fatal',
        error:
          head.status === 401
            ? new RendezvousError('AUTH_FAILED', 'authentication failed')
            : new RendezvousError('BAD_REQUEST', `relay refused CONNECT (${head.status})`),
      };
    }
    if (sent) ctx.codes.spent(sent.step);
    // 429, 503 (Retry-After), 408, 409, 5xx: transient.
    const retryAfter = Number(headerValue(head, 'retry-after'));
    const reason = `CONNECT refused (${head.status})`;
    return {
      kind: 'retry',
      cause: { after: 'refusal', reason },
      message: 'CONNECT refused, retrying',
      fields: { relay, status: head.status },
      retryAfter: retryAfter > 0 ? retryAfter : undefined,
    };
  }

  /** The CONNECT was accepted: keep its cookie, report the park, wait for a request. */
  private async parked(
    slot: number,
    socket: Socket,
    head: ResponseHead,
    sent: SentCode | undefined,
    release: (() => void) | undefined,
    target: TargetState | undefined,
    recycled: () => boolean,
  ): Promise<ParkOutcome> {
    const ctx = this.ctx;
    if (sent) ctx.codes.accepted(sent.step);
    const cookie = headerValue(head, COOKIE_HEADER);
    if (cookie) this.cookie = cookie;
    release?.();
    if (!this.registeredOnce) {
      this.registeredOnce = true;
      ctx.registered({ relay: ctx.opts.relay as string });
    }
    ctx.parked(slot, this.relay, target);
    const first = await waitForRendezvous(socket);
    ctx.release(socket);
    if (first)
      return { kind: 'paired', socket, relay: this.relay, rid: ridFromRequestHead(socket), fresh: true };
    if (recycled()) return { kind: 'again', cause: { after: 'target_changed' }, fresh: true };
    if (ctx.stopped()) return { kind: 'stopped' };
    // A quiet pause (no warning): the relay may close parks for its own reasons.
    return {
      kind: 'retry',
      cause: { after: 'failure', reason: 'parked connection closed by the relay' },
      fresh: true,
    };
  }
}

/** Resolves true when the first bytes of a rendezvous arrive (left unread), false on close. */
function waitForRendezvous(socket: Socket): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (v: boolean) => {
      socket.off('readable', onReadable);
      socket.off('close', onClose);
      socket.off('end', onClose);
      socket.off('error', onClose);
      resolve(v);
    };
    const onReadable = () => {
      if (socket.readableLength > 0) done(true);
      // At EOF 'readable' fires with nothing buffered; read(0) lets 'end' be emitted.
      else socket.read(0);
    };
    // A reset while parked is as good as a close: park again.
    const onClose = () => {
      socket.destroy();
      done(false);
    };
    socket.on('readable', onReadable);
    socket.on('close', onClose);
    socket.on('end', onClose);
    socket.on('error', onClose);
  });
}

/** The `Rendezvous-Id` the relay put in the request head it forwarded, if the head's first bytes (already buffered) carry it. */
function ridFromRequestHead(socket: Socket): string | undefined {
  // A peek: read what is buffered and put it back untouched; nothing waits for more bytes.
  const chunk = socket.read() as Buffer | null;
  if (!chunk) return undefined;
  socket.unshift(chunk);
  return forwardedRid(chunk);
}
