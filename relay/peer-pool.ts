/**
 * Idle links to other relays, opened ahead of need: a cross-relay pairing takes one that is
 * already connected instead of opening a TCP connection on
 * its critical path, and asks a replacement to be opened in the background. A link still idle
 * after PEER_HELLO_AFTER_MS authenticates itself (a signed hello) to wait longer. Each link still
 * carries one pairing (its splice then owns it), and each request on it is still a signed line
 * with its own nonce. Bounded: idle links per peer, peers, and how long a link waits idle
 * (less than the holder's PEER_LINK_IDLE_MS, so the holder rarely closes one under us).
 */
import type { Socket } from 'node:net';
import { connectTcp } from '../core/socket-reader.js';
import { encodePeerHello, isRelayId, PEER_LINK_IDLE_MS, PEER_TIMEOUT_MS, splitPeer } from './peer-line.js';

/** When an idle link says its hello: a second before the holder's deadline for a first line. */
export const PEER_HELLO_AFTER_MS = PEER_TIMEOUT_MS - 1_000;

/** Pool bounds. */
export interface PeerPoolOptions {
  /** Idle (or opening) links kept per peer relay. */
  maxIdlePerPeer: number;
  /** Peer relays with idle links; past it the least recently used peer's links are closed. */
  maxPeers: number;
  /** An idle link unused this long is closed. */
  idleMs: number;
}

/** Pool defaults. */
export const PEER_POOL_DEFAULTS: PeerPoolOptions = {
  maxIdlePerPeer: 16,
  maxPeers: 64,
  idleMs: PEER_LINK_IDLE_MS - 10_000,
};

interface IdleLink {
  socket: Socket;
  /** Takes the link out of the pool: listeners and timer removed. */
  detach: () => void;
}

/** Idle authenticated links to other relays, per peer address. */
export class PeerPool {
  /** Per peer, idle links (newest last); Map order is least recently used first. */
  private readonly idle = new Map<string, IdleLink[]>();
  private readonly opening = new Map<string, number>();
  /** Per peer address, the id of the relay there (the newest a pairing named): what hellos are bound to. */
  private readonly relayIds = new Map<string, string>();
  private closed = false;

  constructor(
    private readonly secret: string,
    private readonly opts: PeerPoolOptions = PEER_POOL_DEFAULTS,
  ) {}

  /** Idle links in all (for tests and health). */
  get size(): number {
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  /** Idle links to `peer`. */
  idleTo(peer: string): number {
    return this.idle.get(peer)?.length ?? 0;
  }

  /**
   * A live idle link to `peer`, out of the pool (paused, no listener of the pool left), or
   * undefined; either way one more is opened in the background for the next pairing. `relayId`
   * is the id of the relay at `peer`, which the hellos of links to it are bound to.
   */
  take(peer: string, relayId?: string): Socket | undefined {
    this.remember(peer, relayId);
    const list = this.idle.get(peer);
    let link: Socket | undefined;
    while (list && list.length > 0 && !link) {
      const entry = list.pop() as IdleLink;
      entry.detach();
      const s = entry.socket;
      if (!s.destroyed && s.writable && !s.readableEnded) link = s;
      else s.destroy();
    }
    if (list) {
      // Most recently used peer last.
      this.idle.delete(peer);
      if (list.length > 0) this.idle.set(peer, list);
    }
    this.open(peer);
    return link;
  }

  /** Notes which relay is at `peer` (a shape a hello can carry), keeping the map small. */
  private remember(peer: string, relayId: string | undefined): void {
    this.relayIds.delete(peer);
    if (relayId === undefined || !isRelayId(relayId)) return;
    // Addresses of relays long gone (stale records, replaced tasks) are forgotten.
    if (this.relayIds.size >= this.opts.maxPeers * 4)
      for (const p of this.relayIds.keys())
        if (!this.idle.has(p) && !this.opening.has(p)) this.relayIds.delete(p);
    this.relayIds.set(peer, relayId);
  }

  /** Closes every idle link and opens no more (drain). */
  close(): void {
    this.closed = true;
    for (const list of this.idle.values()) for (const e of list.splice(0)) e.socket.destroy();
    this.idle.clear();
    this.relayIds.clear();
  }

  private open(peer: string): void {
    if (this.closed) return;
    const opening = this.opening.get(peer) ?? 0;
    if (this.idleTo(peer) + opening >= this.opts.maxIdlePerPeer) return;
    if (!this.idle.has(peer) && opening === 0 && this.idle.size >= this.opts.maxPeers) {
      const [oldest, list] = this.idle.entries().next().value as [string, IdleLink[]];
      this.idle.delete(oldest);
      this.relayIds.delete(oldest);
      for (const e of list) e.socket.destroy();
    }
    this.opening.set(peer, opening + 1);
    const [host, port] = splitPeer(peer);
    connectTcp(host, port, { timeoutMs: PEER_TIMEOUT_MS })
      .then(
        (socket) => this.add(peer, socket),
        // A peer that cannot be reached gets no idle link; the next pairing dials as before.
        () => {},
      )
      .finally(() => {
        const n = (this.opening.get(peer) ?? 1) - 1;
        if (n <= 0) this.opening.delete(peer);
        else this.opening.set(peer, n);
      });
  }

  private add(peer: string, socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    let list = this.idle.get(peer);
    if (!list) {
      list = [];
      this.idle.set(peer, list);
    }
    const entries = list;
    // The holder says nothing on an idle link: any byte, its end or an error means the link is
    // no use any more (the holder restarted, drained or gave it up).
    const drop = () => {
      entry.detach();
      const i = entries.indexOf(entry);
      if (i >= 0) entries.splice(i, 1);
      if (entries.length === 0 && this.idle.get(peer) === entries) this.idle.delete(peer);
      socket.destroy();
    };
    // Under load a link is taken within milliseconds and its request is its first line. One
    // still idle shortly before the holder's deadline for a first line says its hello, which
    // lets it wait up to idleMs: the signing is only paid for links that wait.
    let timer = setTimeout(() => {
      socket.write(encodePeerHello(this.secret, Date.now(), this.relayIds.get(peer)));
      timer = setTimeout(drop, Math.max(0, this.opts.idleMs - PEER_HELLO_AFTER_MS));
      timer.unref();
    }, PEER_HELLO_AFTER_MS);
    timer.unref();
    const entry: IdleLink = {
      socket,
      detach: () => {
        clearTimeout(timer);
        socket.off('data', drop);
        socket.off('end', drop);
        socket.off('close', drop);
        socket.off('error', drop);
        socket.pause();
      },
    };
    socket.on('data', drop);
    socket.on('end', drop);
    socket.on('close', drop);
    socket.on('error', drop);
    entries.push(entry);
  }
}
