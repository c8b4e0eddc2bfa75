/**
 * One request per connection on the HTTP-specific port: the byte filters of an HTTP splice. The
 * mobile side passes the first request (head already forwarded, then its body) and drops what
 * follows; the hidden side's answer gets `Connection: close` written into its head and ends the
 * connection after its body. A WebSocket upgrade (101) turns both into a plain tunnel.
 */
import { Transform } from 'node:stream';
import { encodeResponse, MAX_HEAD, RequestBodyFramer } from '../core/http-head.js';
import { headForHost } from './host-origin.js';

/**
 * Passes the mobile client's bytes to the hidden server up to the end of the first request's
 * body, and drops whatever follows (another request, perhaps for another hidden server) unless
 * the connection was upgraded. Dropping rather than ending: a hidden server that sees the mobile
 * side's FIN mid-answer may abort its answer.
 */
export class OneRequestGate extends Transform {
  private held: Buffer[] = [];
  private heldBytes = 0;
  /** Bytes passed on towards the hidden server (what the identity is billed for; dropped bytes are not). */
  passed = 0;
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
    if (switched)
      for (const b of this.held) {
        this.passed += b.length;
        this.push(b);
      }
    this.held = [];
    this.heldBytes = 0;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    if (this.upgraded) {
      this.passed += chunk.length;
      this.push(chunk);
      done();
      return;
    }
    const body = this.framer.done ? 0 : this.framer.push(chunk);
    if (body > 0) {
      this.passed += body;
      this.push(chunk.subarray(0, body));
    }
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
 * With `cookieHost` (host-based routing), every head's cookies are restricted to that host
 * (relay/host-origin.ts), and an answer whose head cannot be read that strictly is a 502 instead.
 */
export class OneResponseGate extends Transform {
  private head: Buffer[] = [];
  private headBytes = 0;
  private mode: 'head' | 'body' | 'through' | 'done' = 'head';
  private framer: RequestBodyFramer | undefined;

  constructor(
    private readonly noBody: boolean,
    private readonly onStatus: (switched: boolean) => void,
    private readonly cookieHost?: string,
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
    const lines =
      this.cookieHost === undefined ? text.split('\r\n') : headForHost(text.split('\r\n'), this.cookieHost);
    if (!lines) {
      this.refuse();
      return Buffer.alloc(0);
    }
    if (code < 200) {
      // A 101 keeps its head (cookies aside) and the connection becomes a tunnel; 100 Continue
      // and 103 Early Hints pass, the final answer is still to come.
      this.push(Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'));
      if (code !== 101) return after;
      this.onStatus(true);
      if (after.length > 0) this.push(after);
      this.mode = 'through';
      return Buffer.alloc(0);
    }
    this.onStatus(false);
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
    if (this.cookieHost !== undefined) {
      this.refuse();
      return;
    }
    this.head = [];
    this.headBytes = 0;
    this.onStatus(false);
    this.push(bytes);
    this.mode = 'through';
  }

  /** An answer whose cookies cannot be checked never reaches a browser: a 502 in its place. */
  private refuse(): void {
    this.head = [];
    this.headBytes = 0;
    this.onStatus(false);
    this.push(
      encodeResponse(502, {}, { permanent: false, diagnostic: 'unreadable answer from the hidden server' }),
    );
    this.finish();
  }

  /** The answer is complete: end the mobile side (its `Connection: close` said so). */
  private finish(): void {
    this.mode = 'done';
    this.push(null);
  }
}
