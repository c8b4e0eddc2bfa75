/**
 * Parked hidden-server sockets of this relay process, keyed by protocol and key (the cookie for
 * the generic protocol, the uuid for the HTTP-specific one), and the mobile clients waiting
 * here for one. Nothing in here talks to the store or to other relays: `hooks` report when a
 * key gains its first or loses its last parked socket, and the park records follow from that.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ParkKind } from '../core/protocol.js';
import { encodeOkLine } from '../core/relay-line.js';

/** One parked socket. */
export interface Parked {
  socket: Socket;
  kind: ParkKind;
  key: string;
  uuid: string;
  /** HTTP parks: the TOTP step the CONNECT authenticated with (code-reuse rule). */
  step?: number;
  /**
   * The identity generation the park authenticated in (HTTP: its CONNECT; generic: the
   * registration of its cookie). Rotation and disable end parks — and rendezvous — of older ones.
   */
  generation?: number;
  /** Generic parks: the hidden server asked for `+OK rid=<rid>` (the `rid` option). */
  wantsRid?: true;
  /** Generic parks that asked (`direct`): the relay's direct address, said with `+OK` (one shared string). */
  direct?: string;
}

/** Reports from the lot to whoever keeps park records. */
export interface ParkingHooks {
  /** The number of sockets parked under (kind, key) changed. */
  onCount(kind: ParkKind, key: string, count: number): void;
}

/**
 * What the lot keeps per key (kind, key): the key's strings once, not once per socket, and its
 * parked sockets, oldest first.
 */
class KeyRecord {
  readonly entries: Entry[] = [];
  constructor(
    readonly lot: ParkingLot,
    readonly id: string,
    readonly kind: ParkKind,
    readonly key: string,
    readonly uuid: string,
  ) {}
}

/**
 * One parked socket: a class with every field always set, so all entries share one hidden class
 * (an object spread gave each its own, about 240 bytes a socket), and only what differs per socket.
 */
class Entry {
  constructor(
    readonly socket: Socket,
    readonly rec: KeyRecord,
    readonly onEarlyData: (p: Parked) => void,
    readonly step: number | undefined,
    readonly generation: number | undefined,
    readonly wantsRid: boolean,
    /** The relay's direct address for a park that asked (one string shared by every entry). */
    readonly direct: string | undefined,
  ) {}
}

/**
 * A parked socket's entry, on the socket itself: the lot's listeners are functions shared by every
 * parked socket (no closures per socket), and find their entry here.
 */
const ENTRY = Symbol('parked entry');
type ParkedSocket = Socket & { [ENTRY]?: Entry; [CLOSE_REPORTED]?: true };

/**
 * Set on a socket whose `close` and `error` events another owner already handles (relay/capacity.ts
 * tracks every accepted socket: it destroys on `error` and calls `parkedSocketClosed` on `close`).
 * The lot then adds no listener of its own for those two: one `close` handler per parked socket.
 */
export const CLOSE_REPORTED = Symbol('close reported');

/** A socket that may be parked closed: it leaves its lot (called by the socket's `close` owner). */
export function parkedSocketClosed(socket: Socket): void {
  const entry = (socket as ParkedSocket)[ENTRY];
  if (entry) entry.rec.lot.gone(entry);
}

const parkedOf = (e: Entry): Parked => {
  const { rec } = e;
  const p: Parked = { socket: e.socket, kind: rec.kind, key: rec.key, uuid: rec.uuid };
  if (e.step !== undefined) p.step = e.step;
  if (e.generation !== undefined) {
    p.generation = e.generation;
    // Set when handed over, not while parked: a parked socket carries one property fewer.
    (e.socket as Socket & { [GENERATION]?: number })[GENERATION] = e.generation;
  }
  if (e.wantsRid) p.wantsRid = true;
  if (e.direct) p.direct = e.direct;
  return p;
};

interface Waiter {
  resolve: (p: Parked | undefined) => void;
  timer: NodeJS.Timeout;
}

const id = (kind: ParkKind, key: string) => `${kind}\u0000${key}`;

/**
 * True when a socket can no longer carry a rendezvous: destroyed, its write side gone, or its
 * peer's FIN already read (a hidden server that hung up right after parking).
 */
export function isGone(socket: Socket): boolean {
  const state = (socket as Socket & { _readableState?: { ended?: boolean } })._readableState;
  return socket.destroyed || !socket.writable || socket.readableEnded || state?.ended === true;
}

/** Where a parked socket keeps its park's generation after it is handed over (its rendezvous reads it). */
const GENERATION = Symbol('park generation');

/**
 * The identity generation a hidden server's socket was parked in, or undefined for a stream that
 * was never parked here (a peer link to the relay holding it).
 */
export function parkedGeneration(s: Duplex): number | undefined {
  return (s as Duplex & { [GENERATION]?: number })[GENERATION];
}

/** A parked socket made ready for the mobile client's bytes: a generic hidden server gets its `+OK`. */
export function hiddenStream(
  kind: ParkKind,
  p: Pick<Parked, 'socket' | 'wantsRid' | 'direct'>,
  rid: string,
): Duplex {
  if (kind === 'generic') p.socket.write(encodeOkLine(p.wantsRid ? rid : undefined, p.direct));
  return p.socket;
}

/** Parked hidden servers and waiting mobile clients of one relay process. */
export class ParkingLot {
  private readonly parked = new Map<string, KeyRecord>();
  /** The generic keys of each uuid: a park replaces older cookies without scanning every key. */
  private readonly genericByUuid = new Map<string, Set<KeyRecord>>();
  private readonly waiters = new Map<string, Waiter[]>();
  private parkedCount = 0;

  /** The hidden server hung up (FIN, or close and error where nobody else reports them) while parked. */
  private readonly onGone: (this: ParkedSocket) => void;
  /** The hidden server sent before its rendezvous. */
  private readonly onData: (this: ParkedSocket) => void;

  constructor(
    private readonly maxPerKey: number,
    private readonly hooks: ParkingHooks = { onCount() {} },
  ) {
    const lot = this;
    this.onGone = function (this: ParkedSocket) {
      const entry = this[ENTRY];
      if (entry) lot.remove(entry);
      this.destroy();
    };
    this.onData = function (this: ParkedSocket) {
      const entry = this[ENTRY];
      if (!entry) return;
      lot.remove(entry);
      entry.onEarlyData(parkedOf(entry));
    };
  }

  /** Parked sockets in all. */
  get size(): number {
    return this.parkedCount;
  }

  /** Parked sockets of one kind (the ParkedSockets gauge, read when scraped). */
  sizeOf(kind: ParkKind): number {
    let n = 0;
    for (const rec of this.parked.values()) if (rec.kind === kind) n += rec.entries.length;
    return n;
  }

  /** Keys of one kind with at least one parked socket. */
  keys(kind: ParkKind): string[] {
    const out: string[] = [];
    for (const rec of this.parked.values()) if (rec.kind === kind) out.push(rec.key);
    return out;
  }

  /** Parked sockets under (kind, key). */
  count(kind: ParkKind, key: string): number {
    return this.parked.get(id(kind, key))?.entries.length ?? 0;
  }

  /** The newest code step among live HTTP parks of `uuid`, if any. */
  newestStep(uuid: string): number | undefined {
    let step: number | undefined;
    for (const e of this.parked.get(id('http', uuid))?.entries ?? []) {
      if (e.step !== undefined && (step === undefined || e.step > step)) step = e.step;
    }
    return step;
  }

  /** True when a live HTTP park of `uuid` was made with code step `step`. */
  hasParkWithStep(uuid: string, step: number): boolean {
    return (this.parked.get(id('http', uuid))?.entries ?? []).some(
      (e) => e.step === step && !e.socket.destroyed,
    );
  }

  /**
   * Parks a socket, or hands it straight to a mobile client waiting for its key. Returns false
   * when the key is at its limit (the caller refuses the socket). `onEarlyData` runs if the
   * hidden server sends before its rendezvous; the socket is already out of the lot then. Pass
   * one function shared by many parks, not a closure per socket: the entry keeps it.
   */
  park(p: Parked, onEarlyData: (p: Parked) => void): boolean {
    const k = id(p.kind, p.key);
    // A socket that is already gone is never parked nor handed over: it is closed, and "parked" is
    // still the answer (there is nobody to refuse).
    if (isGone(p.socket)) {
      p.socket.destroy();
      return true;
    }
    const waiting = this.waiters.get(k)?.shift();
    if (waiting) {
      if (p.generation !== undefined)
        (p.socket as Socket & { [GENERATION]?: number })[GENERATION] = p.generation;
      if (this.waiters.get(k)?.length === 0) this.waiters.delete(k);
      clearTimeout(waiting.timer);
      waiting.resolve(p);
      return true;
    }
    let rec = this.parked.get(k);
    if (rec && rec.entries.length >= this.maxPerKey) return false;
    if (!rec) {
      rec = new KeyRecord(this, k, p.kind, p.key, p.uuid);
      this.parked.set(k, rec);
      if (rec.kind === 'generic') {
        const keys = this.genericByUuid.get(rec.uuid);
        if (keys) keys.add(rec);
        else this.genericByUuid.set(rec.uuid, new Set([rec]));
      }
    }
    const socket = p.socket as ParkedSocket;
    const entry = new Entry(socket, rec, onEarlyData, p.step, p.generation, p.wantsRid === true, p.direct);
    socket[ENTRY] = entry;
    socket.on('data', this.onData);
    socket.on('end', this.onGone);
    if (!socket[CLOSE_REPORTED]) {
      socket.on('close', this.onGone);
      socket.on('error', this.onGone);
    }
    socket.resume();
    rec.entries.push(entry);
    this.parkedCount++;
    this.hooks.onCount(rec.kind, rec.key, rec.entries.length);
    return true;
  }

  /** Takes one live parked socket for (kind, key), oldest first, detached from the lot. */
  take(kind: ParkKind, key: string): Parked | undefined {
    const rec = this.parked.get(id(kind, key));
    while (rec && rec.entries.length > 0) {
      const entry = rec.entries[0] as Entry;
      this.remove(entry);
      if (!isGone(entry.socket)) {
        entry.socket.pause();
        return parkedOf(entry);
      }
      entry.socket.destroy();
    }
    return undefined;
  }

  /** Waits up to `ms` for a socket to be parked under (kind, key); it is handed over, not parked. */
  waitFor(
    kind: ParkKind,
    key: string,
    ms: number,
  ): { promise: Promise<Parked | undefined>; cancel: () => void } {
    const k = id(kind, key);
    let waiter: Waiter | undefined;
    const promise = new Promise<Parked | undefined>((resolve) => {
      waiter = {
        resolve,
        timer: setTimeout(() => {
          this.dropWaiter(k, waiter as Waiter);
          resolve(undefined);
        }, ms),
      };
      const list = this.waiters.get(k) ?? [];
      list.push(waiter);
      this.waiters.set(k, list);
    });
    return {
      promise,
      cancel: () => {
        if (!waiter) return;
        clearTimeout(waiter.timer);
        this.dropWaiter(k, waiter);
        waiter.resolve(undefined);
      },
    };
  }

  /** Removes and returns the sockets parked under (kind, key) that `pred` selects. */
  takeWhere(kind: ParkKind, key: string, pred: (p: Parked) => boolean): Parked[] {
    const out: Parked[] = [];
    for (const entry of [...(this.parked.get(id(kind, key))?.entries ?? [])]) {
      const p = parkedOf(entry);
      if (!pred(p)) continue;
      this.remove(entry);
      out.push(p);
    }
    return out;
  }

  /** Removes and returns every socket parked under (kind, key). */
  takeAll(kind: ParkKind, key: string): Parked[] {
    const out: Parked[] = [];
    for (const entry of [...(this.parked.get(id(kind, key))?.entries ?? [])]) {
      this.remove(entry);
      out.push(parkedOf(entry));
    }
    return out;
  }

  /** Removes and returns every parked socket (shutdown); waiting mobile clients get nothing. */
  drainAll(): Parked[] {
    const out: Parked[] = [];
    for (const rec of [...this.parked.values()]) {
      for (const entry of [...rec.entries]) {
        this.remove(entry);
        out.push(parkedOf(entry));
      }
    }
    for (const list of [...this.waiters.values()]) {
      for (const w of [...list]) {
        clearTimeout(w.timer);
        w.resolve(undefined);
      }
    }
    this.waiters.clear();
    return out;
  }

  /** Keys of one kind whose parked sockets belong to `uuid`. */
  keysOfUuid(kind: ParkKind, uuid: string): string[] {
    if (kind === 'http') return this.parked.has(id('http', uuid)) ? [uuid] : [];
    return [...(this.genericByUuid.get(uuid) ?? [])].map((rec) => rec.key);
  }

  /** A parked socket closed (reported by its `close` owner, see `parkedSocketClosed`). */
  gone(entry: Entry): void {
    this.remove(entry);
    entry.socket.destroy();
  }

  private dropWaiter(k: string, w: Waiter): void {
    const list = this.waiters.get(k);
    if (!list) return;
    const i = list.indexOf(w);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.waiters.delete(k);
  }

  private remove(entry: Entry): void {
    const socket = entry.socket as ParkedSocket;
    if (socket[ENTRY] === entry) {
      socket[ENTRY] = undefined;
      socket.off('data', this.onData);
      socket.off('end', this.onGone);
      if (!socket[CLOSE_REPORTED]) {
        socket.off('close', this.onGone);
        socket.off('error', this.onGone);
      }
    }
    const { rec } = entry;
    const i = rec.entries.indexOf(entry);
    if (i < 0) return;
    rec.entries.splice(i, 1);
    this.parkedCount--;
    if (rec.entries.length === 0 && this.parked.get(rec.id) === rec) {
      this.parked.delete(rec.id);
      const keys = this.genericByUuid.get(rec.uuid);
      if (keys?.delete(rec) && keys.size === 0) this.genericByUuid.delete(rec.uuid);
    }
    this.hooks.onCount(rec.kind, rec.key, rec.entries.length);
  }
}
