/**
 * Handshake admission: who may open a session. A flood from one address (or from everywhere) is
 * refused at once, before it costs a timer, a decoder or a store read.
 */
import type { Socket } from 'node:net';

/** A connection let into its handshake, with its release (idempotent), or why not. */
export type Admitted = { ok: true; release: () => void } | { ok: false; reason: string };

/** One connection in its handshake; `source` is set once its address is counted. */
interface Admission {
  socket: Socket;
  source?: string;
}

/** Connections still in their handshake, bounded per source address and in all. */
export class HandshakeAdmission {
  private handshaking = 0;
  private readonly perSource = new Map<string, number>();
  // While fewer than maxPerSource connections are in handshake in all, no source can be at its
  // limit, so a connection's source (a getpeername call) is not looked up: it waits in `unsourced`
  // and is counted only if the total grows that far. Exact whenever the limit can bite.
  private readonly unsourced = new Set<Admission>();

  constructor(
    private readonly maxPerSource: number,
    private readonly maxTotal: number,
  ) {}

  /**
   * Admits a fresh connection into its handshake, or says why not (too many handshakes from its
   * source address or in all). `release` also runs when the socket closes.
   */
  admit(socket: Socket): Admitted {
    if (this.handshaking >= this.maxTotal) {
      return { ok: false, reason: 'too many connections in handshake, try again' };
    }
    const a: Admission = { socket };
    if (this.handshaking + 1 >= this.maxPerSource) {
      for (const other of this.unsourced) this.countSource(other);
      this.unsourced.clear();
      const source = socket.remoteAddress ?? '?';
      if ((this.perSource.get(source) ?? 0) >= this.maxPerSource) {
        return { ok: false, reason: 'too many connections in handshake from your address' };
      }
      this.countSource(a);
    } else this.unsourced.add(a);
    this.handshaking++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      // Nothing of the handshake stays on a socket that goes on to park.
      socket.off('close', release);
      this.handshaking--;
      if (a.source === undefined) {
        this.unsourced.delete(a);
        return;
      }
      const n = (this.perSource.get(a.source) ?? 1) - 1;
      if (n <= 0) this.perSource.delete(a.source);
      else this.perSource.set(a.source, n);
    };
    socket.once('close', release);
    return { ok: true, release };
  }

  private countSource(a: Admission): void {
    a.source = a.socket.remoteAddress ?? '?';
    this.perSource.set(a.source, (this.perSource.get(a.source) ?? 0) + 1);
  }
}
