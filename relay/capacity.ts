/**
 * The descriptor ceiling: past it the kernel's accept fails and libuv resets new connections
 * silently, and /healthz and the store's connections fail too. So the relay stops short of it,
 * keeping FD_HEADROOM_SHARE of the limit for itself, and says so on the wire (`-ERR relay at
 * capacity, try again`, or a 503 on the HTTP port) and in the log.
 */
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { encodeResponse } from '../core/http-head.js';
import type { Log } from '../core/log.js';
import { encodeErrorLine } from '../core/relay-line.js';
import { CLOSE_REPORTED, parkedSocketClosed } from './parking.js';
import type { RelayTelemetry } from './telemetry.js';

/** Share of the descriptor limit kept free of accepted connections (store, health, links this relay opens to peers, logs). */
export const FD_HEADROOM_SHARE = 0.2;

/** What a client past the ceiling is told. */
const AT_CAPACITY = 'relay at capacity, try again';

/** The soft limit on open descriptors (Linux /proc), or undefined where it cannot be read. */
export function readFdLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The connections a relay holds (both public listeners and the peer port), against its
 * descriptor ceiling. Peer connections count too: strangers' connections to the peer port hold
 * descriptors like anyone's, and once uncounted they pushed the process past its limit unseen.
 */
export class ClientSockets {
  private readonly open = new Set<Socket>();
  /** The descriptor limit stayed below (undefined: none). */
  private readonly fdLimit: number | undefined;
  private readonly maxClientSockets: number | undefined;
  // Shared listeners, not closures per socket: a parked socket holds as little as it can.
  private readonly untrack: (this: Socket) => void;
  private readonly destroyOnError = function (this: Socket) {
    this.destroy();
  };

  constructor(
    private readonly telemetry: RelayTelemetry,
    /** The descriptor limit to stay below (default: the process's soft limit; 0: none). */
    fdLimit?: number,
  ) {
    this.fdLimit = fdLimit === undefined ? readFdLimit() : fdLimit;
    this.maxClientSockets = this.fdLimit
      ? Math.floor(this.fdLimit * (1 - FD_HEADROOM_SHARE)) - 16
      : undefined;
    const open = this.open;
    // The one `close` handler of an accepted socket: a parked one leaves its lot here too.
    this.untrack = function (this: Socket) {
      open.delete(this);
      parkedSocketClosed(this);
    };
  }

  /**
   * Tracks an accepted socket. False when it is past the ceiling: the refusal is recorded and the
   * socket answered and closed at once.
   */
  accept(socket: Socket, protocol: 'generic' | 'http' | 'peer'): boolean {
    this.track(socket);
    if (!this.atCeiling(socket, protocol)) return true;
    if (protocol === 'http')
      shed(
        socket,
        encodeResponse(503, { 'Retry-After': '1' }, { permanent: false, diagnostic: AT_CAPACITY }),
      );
    else shed(socket, encodeErrorLine(AT_CAPACITY));
    return false;
  }

  /**
   * `share` of the connections allowed below the ceiling (rounded down, at least 1), or undefined
   * without a ceiling: the peer port's admission limit never exceeds a quarter of it.
   */
  ceilingShare(share: number): number | undefined {
    return this.maxClientSockets === undefined
      ? undefined
      : Math.max(1, Math.floor(this.maxClientSockets * share));
  }

  /** Ends every client connection still open (the end of a drain). */
  destroyAll(): void {
    for (const s of this.open) s.destroy();
  }

  private track(socket: Socket): void {
    this.open.add(socket);
    // The parking lot adds no `close`/`error` listeners of its own to a socket tracked here.
    (socket as Socket & { [CLOSE_REPORTED]?: true })[CLOSE_REPORTED] = true;
    // on, not once: once wraps the listener in a closure per socket ('close' comes once anyway).
    socket.on('close', this.untrack);
    // No-delay is not set here: the listeners pass it on (relay/socket-options.ts, relay/server.ts).
    socket.on('error', this.destroyOnError);
  }

  private atCeiling(socket: Socket, protocol: 'generic' | 'http' | 'peer'): boolean {
    if (this.maxClientSockets === undefined || this.open.size <= this.maxClientSockets) return false;
    this.telemetry.refused('at_capacity', {
      protocol,
      source: socket.remoteAddress,
      open: this.open.size,
      fdLimit: this.fdLimit,
    });
    return true;
  }
}

/**
 * Answers and closes at once, freeing the descriptor without the usual linger: the refusals of
 * a flood (past the ceiling, past an admission limit) must not themselves hold descriptors.
 */
export function shed(socket: Socket, answer: Buffer): void {
  socket.end(answer);
  socket.once('finish', () => socket.destroy());
  setTimeout(() => socket.destroy(), 1_000).unref();
}

/**
 * The error handler of each listener: accept failures (EMFILE/ENFILE at the descriptor ceiling)
 * are logged at a bounded rate, not per attempt; anything else is logged as an error.
 */
export function listenerErrors(
  telemetry: RelayTelemetry,
  log: Log,
): (listener: string) => (err: NodeJS.ErrnoException) => void {
  return (listener) => (err) => {
    if (err.code === 'EMFILE' || err.code === 'ENFILE')
      telemetry.limitLog.hit('file descriptors', { listener, code: err.code });
    else log.error('listener error', { listener, error: err.message });
  };
}
