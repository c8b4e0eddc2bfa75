/**
 * The copy loop between two sockets, used by the relay (mobile ⇄ hidden) and the agent
 * (relay ⇄ target). `pipe` gives backpressure (it pauses the source when `write()` returns
 * false and resumes on 'drain') and propagates a half-close with `end()` after the data in
 * flight. An error or abrupt close on either side destroys the other; a graceful close of one
 * side never cuts the other's data still being flushed.
 */
import type { Duplex } from 'node:stream';

/** Splices `a` and `b` both ways; `onDone` runs once when both are closed. */
export function splice(a: Duplex, b: Duplex, onDone?: () => void): void {
  a.pipe(b);
  b.pipe(a);
  // An abort travels on as an abort (RST), so the far peer cannot mistake it for a clean end.
  const abort = () => {
    reset(a);
    reset(b);
  };
  a.on('error', abort);
  b.on('error', abort);
  let closed = 0;
  const onClose = (other: Duplex) => () => {
    // Closed after both directions ended is graceful; anything else is an abort.
    if (!(other.writableEnded && other.readableEnded)) reset(other);
    if (++closed === 2) onDone?.();
  };
  // A side already closed before the splice began counts as closed now (its 'close' is gone).
  for (const [s, other] of [
    [a, b],
    [b, a],
  ] as const) {
    if (s.closed) process.nextTick(onClose(other));
    else s.once('close', onClose(other));
  }
}

function reset(s: Duplex): void {
  const socket = s as Duplex & { resetAndDestroy?: () => void };
  if (socket.destroyed) return;
  if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
  else socket.destroy();
}
