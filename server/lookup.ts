/** Look-up: a mobile client asks where a hidden server is registered and gets its `I` triple. */
import { RendezvousError } from '../core/errors.js';
import type { RelayAddress, RendezvousTriple } from '../core/triple.js';
import { withTls } from './register.js';
import type { ParkRecord, Store } from './store/index.js';

/**
 * Whether (and where) the look-up may name the relay holding the hidden server instead of the
 * registration's front. Absent: never (one store read per look-up, as before).
 */
export interface DirectPolicy {
  /** The look-up's region: a holder whose records name another region is never named. */
  region?: string;
}

/**
 * Answers a mobile client's look-up with the hidden server's triple (I-prefixed cookie). A
 * registration from before the R/I split counts as none (`getRegistration` skips it). With
 * `direct`, a plain-TCP triple names the live relay holding the hidden server's parked sockets
 * when that relay advertises a direct address (`fallback` then carries the front), so the mobile
 * client pairs there without a peer link.
 */
export async function lookupHiddenServer(
  store: Store,
  uuid: string,
  nowMs: number = Date.now(),
  direct?: DirectPolicy,
): Promise<RendezvousTriple> {
  const reg = await store.getRegistration(uuid, nowMs);
  if (!reg) {
    throw new RendezvousError('NOT_REGISTERED', 'hidden server not registered', {
      permanent: false,
    });
  }
  const triple = withTls({ host: reg.host, port: reg.port, cookie: `I${reg.cookie}` }, reg.tlsPort);
  // A TLS triple's certificate names the front, not a task: those keep the front.
  if (!direct || reg.tlsPort) return triple;
  // Naming the holder is an optimisation: a store error here still answers the front.
  const holder = await directHolder(store, reg.cookie, nowMs, direct).catch(() => undefined);
  return holder ? { ...triple, ...holder, fallback: { host: reg.host, port: reg.port } } : triple;
}

/**
 * The direct address of the live relay of this region that holds the most parked sockets for
 * `cookie` (the freshest record on a tie), or undefined.
 */
async function directHolder(
  store: Store,
  cookie: string,
  nowMs: number,
  policy: DirectPolicy,
): Promise<RelayAddress | undefined> {
  // Alive = the relay's heartbeat has not lapsed (a relay without one is dead): Store.liveParks.
  const records = await store.liveParks('generic', cookie, nowMs);
  let best: ParkRecord | undefined;
  for (const r of records) {
    if (!r.direct || (policy.region && r.region && r.region !== policy.region)) continue;
    if (!best || r.count > best.count) best = r;
  }
  return best?.direct ? parseDirect(best.direct) : undefined;
}

/** `host:port` (the host may be an IPv6 literal) → its parts; undefined when malformed. */
export function parseDirect(address: string): RelayAddress | undefined {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const port = Number(address.slice(colon + 1));
  if (colon <= 0 || !host || !Number.isInteger(port) || port <= 0 || port > 65535) return undefined;
  return { host, port };
}
