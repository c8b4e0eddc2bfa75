/**
 * The HTTP-specific protocol's park: a CONNECT to the relay's `http(s)://` endpoint with a code
 * (or, once one was accepted, the cookie its 200 carried), then wait for the first bytes of a
 * request. One parked CONNECT at a time until a cookie is known (codes are single-use), then the
 * cookie for every re-park and every pool slot.
 */
import type { Socket } from 'node:net';
import { isRendezvousError, RendezvousError } from '../core/errors.js';
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
import { errorOfAnswer, refusalOf } from './answers.js';
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
    // A slot that waited here for another's code may find a quota wait begun meanwhile.
    // Checked again after the wait (or the await) with nothing in between: one code in flight at a time.
    for (;;) {
      while (!this.cookie && this.codeInFlight) await this.codeInFlight;
      await ctx.admit(slot);
      if (this.cookie || !this.codeInFlight) break;
    }
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
      let seen = '';
      head = await readPreamble(
        socket,
        (chunk) => {
          // Something other than HTTP answered (a relay's generic port says `-ERR …`).
          if (seen.length < 16) seen += chunk.subarray(0, 16).toString('latin1');
          if ((seen.length >= 5 || seen.includes('\n')) && !seen.startsWith('HTTP/'))
            throw notAnHttpRelay(ctx.opts.relay as string, seen);
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
      if (isRendezvousError(err, 'PROTOCOL')) return { kind: 'fatal', error: err };
      const reason = (err as Error).message;
      return {
        kind: 'retry',
        cause: { after: 'failure', reason },
        message: 'relay connection failed, retrying',
        fields: { relay },
      };
    }
    if (head.status === 200) return this.parked(slot, socket, head, sent, release, target, () => recycled);
    const text = await readBody(socket, head);
    ctx.release(socket);
    socket.destroy();
    const error = errorOfAnswer(
      { status: head.status, header: (n) => headerValue(head, n), text },
      'CONNECT',
      ctx.opts.relay as string,
    );
    if (error.code === 'QUOTA_EXCEEDED') {
      // Spent for the month (the relay checked the credential first): the pool's wait starts
      // before a slot waiting for this code is let go.
      if (sent) ctx.codes.spent(sent.step);
      ctx.quotaExceeded(slot, error);
      release?.();
      return { kind: 'quota' };
    }
    if (head.status === 401 && !sent) {
      this.cookie = undefined; // expired or revoked: authenticate with a code again
      return { kind: 'again', cause: { after: 'refusal', reason: 'cookie refused (401)' } };
    }
    release?.();
    const refusal = sent ? refusalOf(error) : undefined;
    if (sent && refusal) {
      const verdict = ctx.codes.refused(sent, refusal);
      return verdict ? { kind: 'fatal', error: verdict } : { kind: 'again' };
    }
    if (error.code === 'PROTOCOL' || error.code === 'BAD_REQUEST' || head.status === 401)
      return {
        kind: 'fatal',
        error:
          error.code === 'BAD_REQUEST'
            ? new RendezvousError('BAD_REQUEST', `relay refused CONNECT (${head.status}): ${error.message}`)
            : error,
      };
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
    // A relay that grants no cookie (the original's) takes the same code again within its step:
    // re-parks send it at once rather than waiting for the next step.
    else if (sent?.kind === 'code') ctx.codes.allowReuse();
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

/** The error for a `--relay` that answered a CONNECT with something other than HTTP. */
function notAnHttpRelay(relay: string, first: string): RendezvousError {
  const line =
    first
      .split('\n')[0]
      ?.replace(/[^\x20-\x7e]+/g, ' ')
      .trim() ?? '';
  const how = /^[-+](ERR|OK)/.test(line)
    ? `a relay's generic port ("${line}…"): use the relay's HTTP port, or --protocol generic with --api`
    : `something that is not HTTP ("${line}…")`;
  return new RendezvousError('PROTOCOL', `${relay} is not a rendezvous HTTP relay: it answered as ${how}`, {
    permanent: true,
  });
}

/** Limit on a refusal's body read (the relay's are a line of JSON). */
const MAX_REFUSAL_BODY = 8 * 1024;

/** The body of a refusal to a CONNECT (up to its Content-Length, or its close), bounded in size and time. */
function readBody(socket: Socket, head: ResponseHead): Promise<string> {
  const length = Number(headerValue(head, 'content-length'));
  const want =
    Number.isInteger(length) && length >= 0 ? Math.min(length, MAX_REFUSAL_BODY) : MAX_REFUSAL_BODY;
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const done = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', done);
      socket.off('close', done);
      socket.off('error', done);
      resolve(Buffer.concat(chunks).subarray(0, want).toString('utf8'));
    };
    const onData = (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (got >= want) done();
    };
    const timer = setTimeout(done, 3_000);
    if (want === 0) return done();
    socket.on('data', onData);
    socket.once('end', done);
    socket.once('close', done);
    socket.once('error', done);
  });
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
