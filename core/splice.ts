/**
 * The copy loop between two sockets, used by the relay (mobile ⇄ hidden) and the agent
 * (relay ⇄ target). `pipe` gives backpressure (it pauses the source when `write()` returns
 * false and resumes on 'drain') and propagates a half-close with `end()` after the data in
 * flight. An error or abrupt close on either side destroys the other; a graceful close of one
 * side never cuts the other's data still being flushed. Whatever happens, both sides end up
 * destroyed and `onDone` runs exactly once.
 */
import type { Duplex } from 'node:stream';

/** How a splice ended: which side broke it first (`a`, `b`), the idle timeout, or a clean close. */
export type SpliceEndCause = 'closed' | 'a' | 'b' | 'idle';

/** What `onDone` learns: how the splice ended and the bytes read from each side while it ran. */
export interface SpliceEnd {
  cause: SpliceEndCause;
  /** Bytes read from `a` (passed towards `b`) during the splice; 0 unless `countBytes`. */
  fromA: number;
  /** Bytes read from `b` (passed towards `a`) during the splice; 0 unless `countBytes`. */
  fromB: number;
}

/** Options of a splice. */
export interface SpliceOptions {
  /**
   * Count the bytes each side sends. A socket's own counter (`bytesRead`) is read at the start and
   * the end: no listener per chunk, nothing held by sockets that are not spliced.
   */
  countBytes?: boolean;
  /** Ends both sides when no byte has moved either way for this long (0 or absent: never). */
  idleMs?: number;
  /** Runs when the idle timeout ends the splice (for a log line). */
  onIdle?: () => void;
  /** Bytes from `b` to `a` pass through this (it may hold back or drop what must not reach `a`). */
  intoA?: Duplex;
  /** Bytes from `a` to `b` pass through this. */
  intoB?: Duplex;
}

/** A running splice: what it has carried so far (read on demand, e.g. by a periodic meter). */
export interface SpliceHandle {
  /**
   * Bytes read from each side since the splice began, read now from the sockets' own counters
   * (0 unless `countBytes`); after the end, the final figures.
   */
  bytes(): { fromA: number; fromB: number };
}

/** Splices `a` and `b` both ways; `onDone` runs once when both are closed. */
export function splice(
  a: Duplex,
  b: Duplex,
  onDone?: (end: SpliceEnd) => void,
  opts: SpliceOptions = {},
): SpliceHandle {
  let cause: SpliceEndCause | undefined;
  const counted = opts.countBytes ? [readCounter(a), readCounter(b)] : undefined;
  const base = counted?.map((c) => c.count());
  let final: { fromA: number; fromB: number } | undefined;
  const bytes = () =>
    final ?? {
      fromA: counted ? (counted[0] as Counter).count() - (base?.[0] ?? 0) : 0,
      fromB: counted ? (counted[1] as Counter).count() - (base?.[1] ?? 0) : 0,
    };
  if (opts.intoB) a.pipe(opts.intoB).pipe(b);
  else a.pipe(b);
  if (opts.intoA) b.pipe(opts.intoA).pipe(a);
  else b.pipe(a);
  // An abort travels on as an abort (RST), so the far peer cannot mistake it for a clean end.
  const abort = () => {
    reset(a);
    reset(b);
  };
  a.on('error', () => {
    cause ??= 'a';
    abort();
  });
  b.on('error', () => {
    cause ??= 'b';
    abort();
  });
  opts.intoA?.on('error', abort);
  opts.intoB?.on('error', abort);
  let closed = 0;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    idle?.stop();
    final = bytes();
    for (const c of counted ?? []) c.stop();
    onDone?.({ cause: cause ?? 'closed', fromA: final.fromA, fromB: final.fromB });
  };
  const onClose = (self: 'a' | 'b', s: Duplex, other: Duplex) => () => {
    // Closed after both directions ended is graceful; anything else is an abort. After a graceful
    // close, the reset of the other side is ours (an HTTP exchange whose response is complete), so
    // the other side's close that follows is no abort of its own.
    if (!(s.writableEnded && s.readableEnded)) cause ??= self;
    else cause ??= 'closed';
    if (!(other.writableEnded && other.readableEnded)) {
      // `s` ended its sending cleanly, but what it sent may still be on its way to `other`
      // through a filter (a bandwidth throttle waiting for tokens): the pipe ends `other` once it
      // is through, and only then is the rest of `other` cut.
      if (s.readableEnded && !other.writableEnded && !other.destroyed)
        other.once('finish', () => {
          if (!other.readableEnded) reset(other);
        });
      else reset(other);
    }
    if (++closed === 2) finish();
  };
  // A side already closed before the splice began counts as closed now (its 'close' is gone).
  for (const [self, s, other] of [
    ['a', a, b],
    ['b', b, a],
  ] as const) {
    if (s.closed) process.nextTick(onClose(self, s, other));
    else s.once('close', onClose(self, s, other));
  }
  const idle = opts.idleMs
    ? idleTimer(a, b, opts.idleMs, () => {
        cause ??= 'idle';
        opts.onIdle?.();
        abort();
      })
    : undefined;
  return { bytes };
}

/** A splice watched for idleness. */
interface Watched {
  moved: () => number;
  last: number;
  quiet: number;
  onIdle: () => void;
}

/**
 * Splices with one idle timeout, checked together by one timer every `ms`/2: no timer and no
 * per-chunk listener per splice (the byte counters the sockets keep anyway tell whether anything
 * moved). A splice ends between `ms` and 1.5 `ms` after its last byte.
 */
class IdleSweep {
  private readonly watched = new Set<Watched>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly periodMs: number) {}

  add(w: Watched): void {
    this.watched.add(w);
    if (this.timer) return;
    this.timer = setInterval(() => this.sweep(), this.periodMs);
    this.timer.unref();
  }

  delete(w: Watched): void {
    this.watched.delete(w);
    if (this.watched.size > 0 || !this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private sweep(): void {
    for (const w of this.watched) {
      const moved = w.moved();
      if (moved !== w.last) {
        w.last = moved;
        w.quiet = 0;
      } else if (++w.quiet >= 2) {
        this.delete(w);
        w.onIdle();
      }
    }
  }
}

const sweeps = new Map<number, IdleSweep>();

/** A byte counter on one stream. */
interface Counter {
  count: () => number;
  stop: () => void;
}

/**
 * Bytes taken so far from a socket (its own counter, less what still waits in its readable
 * buffer: bytes read from the kernel while no one consumed them, e.g. while a peer link was
 * dialled, are carried by the splice, not before it), or counted by a listener on other streams.
 */
function readCounter(s: Duplex): Counter {
  if (typeof (s as { bytesRead?: unknown }).bytesRead === 'number') {
    const socket = s as Duplex & { bytesRead: number };
    return { count: () => socket.bytesRead - socket.readableLength, stop: () => {} };
  }
  let n = 0;
  const touch = (chunk: Buffer) => {
    n += chunk.length;
  };
  s.on('data', touch);
  return { count: () => n, stop: () => s.off('data', touch) };
}

/** Calls `onIdle` when neither side has carried a byte for `ms`. */
function idleTimer(a: Duplex, b: Duplex, ms: number, onIdle: () => void): { stop: () => void } {
  const period = Math.max(1, Math.floor(ms / 2));
  let sweep = sweeps.get(period);
  if (!sweep) {
    sweep = new IdleSweep(period);
    sweeps.set(period, sweep);
  }
  // Every byte one side reads is written to the other, so watching both reads watches both ways.
  const ra = readCounter(a);
  const rb = readCounter(b);
  const moved = () => ra.count() + rb.count();
  // quiet starts at -1: the first sweep may come at once, and must not count as a quiet period.
  const w: Watched = {
    moved,
    last: moved(),
    quiet: -1,
    onIdle: () => {
      stop();
      onIdle();
    },
  };
  sweep.add(w);
  const stop = () => {
    sweep.delete(w);
    ra.stop();
    rb.stop();
  };
  return { stop };
}

/**
 * Destroys with a RST where that is safe. `resetAndDestroy()` on a socket whose FIN is being
 * sent (end() called, shutdown not finished) fails with EINVAL inside Node and the handle is
 * then never closed — no 'close', a leaked descriptor — so such a socket is destroyed plainly.
 */
export function reset(s: Duplex): void {
  const socket = s as Duplex & { resetAndDestroy?: () => void; connecting?: boolean };
  if (socket.destroyed) return;
  const shuttingDown = socket.writableEnded && !socket.writableFinished;
  if (typeof socket.resetAndDestroy !== 'function' || shuttingDown || socket.connecting) {
    socket.destroy();
    return;
  }
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}
