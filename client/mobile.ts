/** The mobile side: look a hidden server up and get a connected socket to it. */
import type { Socket } from 'node:net';
import { lookupWithApi } from './api.js';
import { dialRelay } from './relay-conn.js';

/** Options of `connectToHiddenServer`. */
export interface MobileConnectOptions {
  /** Registration API base URL. */
  api: string;
  uuid: string;
  /** Bound on the wait for `+OK` (default 15 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Looks `uuid` up and resolves to a socket spliced to the hidden server (after `+OK`). */
export async function connectToHiddenServer(opts: MobileConnectOptions): Promise<Socket> {
  const triple = await lookupWithApi(opts.api, opts.uuid, opts.signal);
  const { socket } = await dialRelay(triple, {
    statusTimeoutMs: opts.timeoutMs ?? 15_000,
    signal: opts.signal,
  });
  return socket;
}
