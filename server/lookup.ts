/** Look-up: a mobile client asks where a hidden server is registered and gets its `I` triple. */
import { RendezvousError } from '../core/errors.js';
import type { RendezvousTriple } from '../core/triple.js';
import { withTls } from './register.js';
import type { Store } from './store/index.js';

/**
 * Answers a mobile client's look-up with the hidden server's triple (I-prefixed cookie). A
 * registration from before the R/I split counts as none (`getRegistration` skips it).
 */
export async function lookupHiddenServer(
  store: Store,
  uuid: string,
  nowMs: number = Date.now(),
): Promise<RendezvousTriple> {
  const reg = await store.getRegistration(uuid, nowMs);
  if (!reg) {
    throw new RendezvousError('NOT_REGISTERED', 'hidden server not registered', {
      permanent: false,
    });
  }
  return withTls({ host: reg.host, port: reg.port, cookie: `I${reg.cookie}` }, reg.tlsPort);
}
