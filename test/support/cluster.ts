/** A relay cluster on one machine: an embedded store, an API, N relays sharing a cluster secret. */
import type { Server } from 'node:http';
import type { LogFields } from '../../core/log.js';
import { makeLookupHandler } from '../../functions/lookup.js';
import { makeRegisterHandler } from '../../functions/register.js';
import { startApiAdapter } from '../../local/api-adapter.js';
import { type Relay, type RelayOptions, startRelay } from '../../relay/server.js';
import type { RegistrationPolicy } from '../../server/register.js';
import { embeddedStore } from './store.js';

/** Log lines a relay wrote, for assertions. */
export interface Captured {
  level: string;
  msg: string;
  fields?: LogFields;
}

/** A log that records every line. */
export function captureLog(lines: Captured[]) {
  const at = (level: string) => (msg: string, fields?: LogFields) => lines.push({ level, msg, fields });
  return { info: at('info'), warn: at('warn'), error: at('error') };
}

/** Starts the store, `n` relays and an API whose triples name relay `apiRelay` (default 0). */
export async function startCluster(
  n: number,
  opts: {
    secret?: string;
    relay?: Partial<RelayOptions>;
    apiRelay?: number;
    policy?: Partial<RegistrationPolicy>;
  } = {},
) {
  const store = await embeddedStore();
  const logs: Captured[][] = [];
  const relays: Relay[] = [];
  for (let i = 0; i < n; i++) {
    const lines: Captured[] = [];
    logs.push(lines);
    relays.push(
      await startRelay({
        store: store.store,
        port: 0,
        httpPort: 0,
        peerPort: 0,
        clusterSecret: opts.secret ?? 'cluster-secret-for-tests',
        pairWaitMs: 3_000,
        // Every test client comes from 127.0.0.1: lift the per-source handshake and splice limits.
        maxHandshakesPerSource: 10_000,
        maxSplicesPerSource: 10_000,
        log: captureLog(lines),
        ...opts.relay,
      }),
    );
  }
  const named = relays[opts.apiRelay ?? 0] as Relay;
  const policy: RegistrationPolicy = {
    relayHost: '127.0.0.1',
    relayPort: named.address.port,
    ...opts.policy,
  };
  const api = await startApiAdapter({
    register: makeRegisterHandler(() => ({ store: store.store, policy })),
    lookup: makeLookupHandler(() => ({ store: store.store })),
    port: 0,
  });
  return {
    store: store.store,
    storeEndpoint: store.endpoint,
    relays,
    logs,
    apiUrl: api.url,
    apiServer: api.server as Server,
    httpUrl: (i: number) => `http://127.0.0.1:${relays[i]?.httpAddress?.port}`,
    close: async () => {
      await api.close();
      for (const r of relays) await r.close();
      await store.close();
    },
  };
}
