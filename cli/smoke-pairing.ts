/**
 * The generic half of `rendezvous smoke`: its hidden side parks, and its mobile side proves a
 * pairing is its own with a random nonce, so that another client taking the parked connection
 * (anyone who knows the uuid can) is recognised as such and the pairing tried again.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { type Dialled, dialRelay } from '../client/relay-conn.js';
import { connectTcp } from '../core/socket-reader.js';
import { splice } from '../core/splice.js';
import type { RendezvousTriple } from '../core/triple.js';

/** The relay refused the park itself (with `cause`): a failure of the park, not a theft. */
export class ParkRefused extends Error {
  constructor(readonly refusal: unknown) {
    super('the relay refused the park');
  }
}

/** Resolves like `p`, or rejects when `ms` pass first. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

/** Reads exactly `n` bytes (the rest stays in the socket), or rejects when it ends first. */
function readExactly(s: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (c: Buffer) => {
      got = Buffer.concat([got, c]);
      if (got.length < n) return;
      done();
      s.pause();
      if (got.length > n) s.unshift(got.subarray(n));
      resolve(got.subarray(0, n));
    };
    const onEnd = () => {
      done();
      reject(new Error(`the connection ended after ${got.length} of ${n} bytes`));
    };
    const done = () => {
      s.off('data', onData);
      s.off('end', onEnd);
      s.off('error', onEnd);
    };
    s.on('data', onData);
    s.once('end', onEnd);
    s.once('error', onEnd);
  });
}

/** A hidden-side park on the generic relay: parked, then paired (or refused). */
export interface GenericPark {
  /** Resolves once the line is written and waiting (or already paired). */
  ready: Promise<void>;
  paired: Promise<Dialled>;
  /** True once a mobile client (ours or another) was paired with it. */
  isPaired(): boolean;
}

export function parkGeneric(triple: RendezvousTriple, cleanup: Array<() => void>): GenericPark {
  let socket: Socket | undefined;
  let markParked = () => {};
  const onParked = new Promise<void>((resolve) => {
    markParked = resolve;
  });
  let pairedNow = false;
  const paired = dialRelay(triple, {
    onConnected: (s) => {
      socket = s;
      markParked();
    },
  });
  paired.then(
    (d) => {
      pairedNow = true;
      cleanup.push(() => d.socket.destroy());
    },
    () => undefined,
  );
  cleanup.push(() => socket?.destroy());
  return { ready: Promise.race([onParked, paired.then(() => {})]), paired, isPaired: () => pairedNow };
}

/**
 * One pairing of this run's mobile side with its own park, proven by a random nonce: the mobile
 * side sends it first, and the parked side must read exactly it. `stolen` when another client
 * was paired with the park instead (the mobile side then finds nothing parked).
 */
export async function pairOnce(
  park: GenericPark,
  mobileTriple: RendezvousTriple,
  echoPort: number,
  ms: number,
  cleanup: Array<() => void>,
): Promise<{ mobile: Socket; nonce: Buffer } | 'stolen'> {
  if (park.isPaired()) return 'stolen';
  const nonce = Buffer.from(`smoke ${randomBytes(16).toString('hex')}\n`);
  const refusedPark = park.paired.then(
    () => new Promise<never>(() => {}),
    (err) => {
      throw new ParkRefused(err);
    },
  );
  let mobile: Socket;
  try {
    const dialed = dialRelay(mobileTriple, { statusTimeoutMs: ms });
    dialed.then((d) => cleanup.push(() => d.socket.destroy())).catch(() => undefined);
    mobile = (await within(Promise.race([dialed, refusedPark]), ms, '+OK')).socket;
  } catch (err) {
    // Nothing was left parked for this run's mobile side: another client was paired with it.
    if (!(err instanceof ParkRefused) && park.isPaired()) return 'stolen';
    throw err;
  }
  mobile.write(nonce);
  const h = await within(park.paired, ms, '+OK on the parked side');
  const first = await within(readExactly(h.socket, nonce.length), ms, 'the nonce on the parked side');
  if (!first.equals(nonce)) {
    h.socket.destroy();
    mobile.destroy();
    return 'stolen';
  }
  const toTarget = await connectTcp('127.0.0.1', echoPort, { timeoutMs: ms });
  // The echo sends the nonce back first: the mobile side checks it is talking to this run.
  toTarget.write(nonce);
  splice(h.socket, toTarget);
  return { mobile, nonce };
}
