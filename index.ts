/**
 * rendezvous as a library. Hidden side: `createHiddenServer` (a `net.Server`-like object whose
 * 'connection' sockets are rendezvous) and `exposeHiddenServer` (forward to a local port).
 * Mobile side: `connect` (a `net.connect`-like promise), `rendezvousUrl` (for HTTP clients) and
 * `rendezvousErrorOf` (a relay's HTTP refusal as a typed error: QUOTA_EXCEEDED, BUSY, …). Errors
 * are `RendezvousError`s with a stable `code` (`ErrorCode`).
 */

export type { AgentEvent, AgentRendezvousEnd, AgentStatus } from './client/agent-report.js';
export type { ApiUrls } from './client/api.js';
export {
  createHiddenServer,
  type ExposeOptions,
  exposeHiddenServer,
  HiddenServer,
  type HiddenServerOptions,
} from './client/hidden-server.js';
export { type ConnectOptions, connect, rendezvousErrorOf, rendezvousUrl } from './client/mobile.js';
export { type ErrorCode, isRendezvousError, RendezvousError } from './core/errors.js';
export type { Log, LogFields } from './core/log.js';
