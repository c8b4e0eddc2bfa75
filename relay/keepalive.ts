/**
 * TCP keepalive (two setsockopt calls, a tenth of a pairing's CPU here) only on sockets that can
 * sit idle long enough for the NLB (350 s idle timeout) to forget them: parked sockets at once,
 * spliced mobile sockets once per sweep (a splice of seconds never pays for it). A splice's first
 * probe then comes at most keepAliveMs/2 + keepAliveMs after its start, far below 350 s.
 */
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** Keepalive for one relay's sockets: at once, or at the next sweep. */
export class KeepAlive {
  private readonly later = new Set<Duplex>();
  private readonly sweep: NodeJS.Timeout;

  constructor(private readonly keepAliveMs: number) {
    this.sweep = setInterval(
      () => {
        for (const s of this.later) if (s instanceof Socket && !s.destroyed) this.now(s);
        this.later.clear();
      },
      Math.max(1_000, keepAliveMs / 2),
    );
    this.sweep.unref();
  }

  /** Turns keepalive on for a socket about to wait idle (a parked hidden server). */
  now(socket: Socket): void {
    socket.setKeepAlive(true, this.keepAliveMs);
  }

  /** Turns keepalive on at the next sweep, unless `forget` comes first (a spliced mobile socket). */
  soon(stream: Duplex): void {
    this.later.add(stream);
  }

  /** The stream's splice ended: no keepalive for it. */
  forget(stream: Duplex): void {
    this.later.delete(stream);
  }

  /** Stops the sweep (drain). */
  stop(): void {
    clearInterval(this.sweep);
  }
}
