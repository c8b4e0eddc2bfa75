/**
 * The CLI's `expose` as a library: a hidden server whose every rendezvous is spliced to a local
 * target, which knows whether that target is reachable (from each connect, and from a cheap TCP
 * probe at start and while idle) and tells the relay with each park.
 */
import { connect, type Socket } from 'node:net';
import type { TargetState } from '../core/relay-line.js';
import { connectTcp } from '../core/socket-reader.js';
import { splice } from '../core/splice.js';
import { type AgentRendezvousEnd, type AgentStatus, PROBE_EVERY_MS } from './agent-report.js';
import type { ExposeOptions } from './options.js';

/** How long a probe waits for the target's TCP handshake before calling it down. */
export const PROBE_TIMEOUT_MS = 2_000;

/** What forwarding needs of a hidden server (a `HiddenServer`, seen from here without importing it). */
export interface ForwardingServer {
  readonly listening: boolean;
  status(): AgentStatus;
  noteTarget(state: TargetState, fields?: { target?: string; reason?: string }): void;
  noteRendezvousEnd(socket: Socket, end: AgentRendezvousEnd, reason?: string): void;
  on(event: 'connection', listener: (socket: Socket) => void): unknown;
  once(event: 'close', listener: () => void): unknown;
  listen(): unknown;
}

/** What an HTTP-specific mobile client reads when the hidden server's target is down. */
const TARGET_DOWN_BODY = JSON.stringify({
  error: { permanent: false, diagnostic: "the hidden server's target is unreachable" },
});

/**
 * Tells the mobile side that the target refused. HTTP: a `502` with the error JSON. Generic:
 * a reset (RST) before any byte, which the relay passes on as a reset, so `rendezvous connect`
 * can say that the far end failed rather than that it ended normally.
 */
function refuseTargetDown(relaySocket: Socket, http: boolean): void {
  if (!http) {
    if (!relaySocket.destroyed) relaySocket.resetAndDestroy();
    return;
  }
  relaySocket.resume(); // the request is not going anywhere; let it drain
  relaySocket.end(
    'HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncache-control: no-store\r\n' +
      `content-length: ${Buffer.byteLength(TARGET_DOWN_BODY)}\r\nconnection: close\r\n\r\n${TARGET_DOWN_BODY}`,
  );
  // Bounded: a mobile client that never closes its side does not hold the socket forever.
  relaySocket.setTimeout(10_000, () => relaySocket.destroy());
}

/**
 * Makes `server` splice every rendezvous to `opts.target` and starts it (`exposeHiddenServer`
 * in client/hidden-server.ts is the public entry). It knows whether the target is reachable
 * from each connect, and from a TCP probe at start and every `probeEveryMs` while idle; each
 * park tells the relay (`target=`, `Rendezvous-Target`).
 */
export function forwardToTarget<S extends ForwardingServer>(server: S, opts: ExposeOptions): S {
  const target = `${opts.target.host}:${opts.target.port}`;
  const http = opts.protocol === 'http';
  let lastReached = 0;
  server.on('connection', (relaySocket) => {
    const local = connect({ ...opts.target, allowHalfOpen: true });
    local.setNoDelay(true);
    const onError = (err: Error) => {
      // Logged as the rendezvous's end (target_unreachable) and, on a change, as `target down`.
      server.noteRendezvousEnd(relaySocket, 'target_unreachable', err.message);
      // The last success no longer vouches for the target: the next probe runs, so a target
      // that comes back is seen within one period, not two.
      lastReached = 0;
      server.noteTarget('down', { target, reason: err.message });
      local.destroy();
      refuseTargetDown(relaySocket, http);
    };
    local.once('error', onError);
    local.once('connect', () => {
      local.off('error', onError);
      lastReached = Date.now();
      server.noteTarget('up', { target });
      // Registered before splice's own listener, so the record says which side aborted.
      local.once('error', (err) => server.noteRendezvousEnd(relaySocket, 'target_reset', err.message));
      splice(relaySocket, local);
    });
  });
  const every = opts.probeEveryMs ?? PROBE_EVERY_MS;
  let timer: NodeJS.Timeout | undefined;
  const probe = async () => {
    const r = await probeTarget(opts.target);
    // A rendezvous that connected meanwhile knows better than this probe.
    if (Date.now() - lastReached > every || r.state === 'down')
      server.noteTarget(r.state, { target, reason: r.reason });
  };
  if (every > 0) {
    timer = setInterval(() => {
      const idle = server.status().live === 0;
      if (server.listening && idle && Date.now() - lastReached >= every) void probe();
    }, every);
    timer.unref();
    server.once('close', () => clearInterval(timer));
  }
  // The first park waits for the first probe (bounded by its timeout), so it already carries
  // the target's state; a close() meanwhile is honoured (start() then parks nothing).
  if (every > 0) void probe().finally(() => server.listen());
  else server.listen();
  return server;
}

/**
 * One TCP handshake with the target: up when it connects, down (with the reason) when it refuses
 * or does not answer within `timeoutMs`. The connection is closed politely: FIN, then whatever the
 * target says (an sshd banner, a greeting) is read and dropped until it closes too. Destroying at
 * once would answer its greeting with a reset, which the target logs (or, without an error
 * handler, dies of).
 */
export async function probeTarget(
  target: { host: string; port: number },
  timeoutMs = PROBE_TIMEOUT_MS,
): Promise<{ state: TargetState; reason?: string }> {
  let s: Socket;
  try {
    s = await connectTcp(target.host, target.port, { timeoutMs });
  } catch (err) {
    const cause = (err as { cause?: Error }).cause;
    return { state: 'down', reason: cause ? cause.message : `no answer within ${timeoutMs} ms` };
  }
  s.on('error', () => undefined);
  s.end();
  s.resume();
  const linger = setTimeout(() => s.destroy(), PROBE_TIMEOUT_MS);
  linger.unref();
  s.once('close', () => clearTimeout(linger));
  return { state: 'up' };
}
