/**
 * Parked hidden-server sockets and waiting mobile clients, per cookie. `parkHiddenServer`
 * keeps an `R` socket until a mobile client claims it; `pairMobileClient` claims one (waiting
 * briefly when none is parked) and splices the two after `+OK` to both.
 */
import type { Socket } from 'node:net';
import type { Log } from '../core/log.js';
import { OK_LINE } from '../core/relay-line.js';
import { splice } from '../core/splice.js';
import { refuse } from './refuse.js';

interface Parked {
  socket: Socket;
  cookie: string;
  uuid: string;
  detach: () => void;
}

interface Waiter {
  socket: Socket;
  early: Buffer;
  timer: NodeJS.Timeout;
  detach: () => void;
}

/** Limits of the parking lot. */
export interface ParkingLimits {
  /** Longest a mobile client waits for a parked socket. */
  pairWaitMs: number;
  /** Parked sockets one cookie may hold. */
  maxParkedPerCookie: number;
}

/** Parked hidden servers and waiting mobile clients of one relay process. */
export class ParkingLot {
  private readonly parked = new Map<string, Parked[]>();
  private readonly cookiesOfUuid = new Map<string, Set<string>>();
  private readonly waiters = new Map<string, Waiter[]>();
  /** Splices running now. */
  activeSplices = 0;

  constructor(
    private readonly limits: ParkingLimits,
    private readonly log: Log,
  ) {}

  /** Number of parked sockets (all cookies). */
  get parkedCount(): number {
    let n = 0;
    for (const list of this.parked.values()) n += list.length;
    return n;
  }

  /** Cookies with at least one parked socket. */
  parkedCookies(): string[] {
    return [...this.parked.keys()];
  }

  /** Parks a validated `R` socket; tells sockets parked with the uuid's older cookies `-ERR`. */
  parkHiddenServer(socket: Socket, cookie: string, uuid: string): void {
    for (const other of this.cookiesOfUuid.get(uuid) ?? []) {
      if (other !== cookie) this.evict(other, 'cookie replaced by a newer registration');
    }
    const waiter = this.shiftWaiter(cookie);
    if (waiter) {
      this.connect(socket, waiter.socket, waiter.early);
      return;
    }
    const list = this.parked.get(cookie) ?? [];
    if (list.length >= this.limits.maxParkedPerCookie) {
      refuse(socket, 'too many parked connections for this cookie');
      return;
    }
    const entry: Parked = { socket, cookie, uuid, detach: () => {} };
    const gone = () => {
      this.removeParked(entry);
      socket.destroy();
    };
    // The hidden server must wait for +OK before it sends anything (seed protocol step 4).
    const early = () => {
      this.removeParked(entry);
      refuse(socket, 'data before +OK');
    };
    socket.on('data', early);
    socket.on('end', gone);
    socket.on('close', gone);
    entry.detach = () => {
      socket.off('data', early);
      socket.off('end', gone);
      socket.off('close', gone);
    };
    socket.resume();
    list.push(entry);
    this.parked.set(cookie, list);
    const cookies = this.cookiesOfUuid.get(uuid) ?? new Set<string>();
    cookies.add(cookie);
    this.cookiesOfUuid.set(uuid, cookies);
  }

  /** Pairs a validated `I` socket with a parked socket of its cookie, waiting briefly for one. */
  pairMobileClient(socket: Socket, cookie: string, early: Buffer): void {
    const hidden = this.takeParked(cookie);
    if (hidden) {
      this.connect(hidden, socket, early);
      return;
    }
    const waiter: Waiter = {
      socket,
      early,
      detach: () => {},
      timer: setTimeout(() => {
        this.removeWaiter(cookie, waiter);
        refuse(socket, 'no hidden server parked for this cookie');
      }, this.limits.pairWaitMs),
    };
    const gone = () => {
      this.removeWaiter(cookie, waiter);
      socket.destroy();
    };
    socket.on('close', gone);
    socket.on('error', gone);
    waiter.detach = () => {
      clearTimeout(waiter.timer);
      socket.off('close', gone);
      socket.off('error', gone);
    };
    const list = this.waiters.get(cookie) ?? [];
    list.push(waiter);
    this.waiters.set(cookie, list);
  }

  /** Tells every socket parked with `cookie` `-ERR <diagnostic>` and forgets them. */
  evict(cookie: string, diagnostic: string): void {
    const list = this.parked.get(cookie);
    if (!list) return;
    for (const entry of [...list]) {
      this.removeParked(entry);
      refuse(entry.socket, diagnostic);
    }
  }

  /** Refuses everything parked or waiting (shutdown). */
  evictAll(diagnostic: string): void {
    for (const cookie of [...this.parked.keys()]) this.evict(cookie, diagnostic);
    for (const [cookie, list] of [...this.waiters]) {
      for (const w of [...list]) {
        this.removeWaiter(cookie, w);
        refuse(w.socket, diagnostic);
      }
    }
  }

  private takeParked(cookie: string): Socket | undefined {
    const list = this.parked.get(cookie);
    while (list && list.length > 0) {
      const entry = list[0] as Parked;
      this.removeParked(entry);
      if (!entry.socket.destroyed && entry.socket.writable) return entry.socket;
    }
    return undefined;
  }

  private shiftWaiter(cookie: string): Waiter | undefined {
    const list = this.waiters.get(cookie);
    const w = list?.shift();
    if (list && list.length === 0) this.waiters.delete(cookie);
    w?.detach();
    return w;
  }

  private removeWaiter(cookie: string, w: Waiter): void {
    w.detach();
    const list = this.waiters.get(cookie);
    if (!list) return;
    const i = list.indexOf(w);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.waiters.delete(cookie);
  }

  private removeParked(entry: Parked): void {
    entry.detach();
    const list = this.parked.get(entry.cookie);
    if (!list) return;
    const i = list.indexOf(entry);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) {
      this.parked.delete(entry.cookie);
      const cookies = this.cookiesOfUuid.get(entry.uuid);
      cookies?.delete(entry.cookie);
      if (cookies?.size === 0) this.cookiesOfUuid.delete(entry.uuid);
    }
  }

  private connect(hidden: Socket, mobile: Socket, early: Buffer): void {
    hidden.write(OK_LINE);
    if (early.length > 0) hidden.write(early);
    mobile.write(OK_LINE);
    this.activeSplices++;
    this.log.info('paired');
    splice(hidden, mobile, () => {
      this.activeSplices--;
    });
  }
}
