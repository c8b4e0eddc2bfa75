/** The relay's defaults, in their own file so the CLI, the local stack and docs read them without the relay. */
/** Relay defaults, named so the CLI and docs can show them. */
export const RELAY_DEFAULTS = {
  port: 8899,
  httpPort: 8898,
  peerPort: 8897,
  handshakeTimeoutMs: 10_000,
  pairWaitMs: 5_000,
  maxParkedPerKey: 64,
  revalidateMs: 10_000,
  keepAliveMs: 60_000,
  maxHandshakesPerSource: 64,
  maxHandshakes: 10_000,
  maxWaitingPerSource: 128,
  maxWaiting: 10_000,
  maxSplicesPerUuid: 100,
  // A sixth of the per-hidden-server cap: a stranger who knows a uuid holds at most that share
  // from one address, and one person's own sessions (shells, a browser's parallel requests,
  // WebSockets) still fit.
  maxSplicesPerSource: 16,
  // An hour: an interactive session left idle (a shell, a database console) survives a long
  // meeting; TCP keepalive (keepAliveMs) already keeps the NLB's 350 s flow timeout from cutting
  // it, so this bound is the relay's own and only ends rendezvous nobody uses.
  idleTimeoutMs: 3_600_000,
  drainGraceMs: 60_000,
  // A rolling deploy's overlap: new tasks start, old ones drain (60 s grace) and stop. Past it no
  // relay of the previous release should be left to send unbound lines.
  peerUnboundGraceMs: 900_000,
} as const;
