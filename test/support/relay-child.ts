/**
 * A relay alone in its own process, for tests that kill one with SIGKILL (a crash: nothing is
 * drained, no record deleted). Configured from the environment: CHILD_STORE_ENDPOINT,
 * CHILD_TABLE, CHILD_HTTP_PORT (0: a free one), CHILD_PUBLIC_URL (the public HTTP name it
 * records, as behind a load balancer), CHILD_HEARTBEAT_MS. Prints one JSON line once listening:
 * `{"relayId","httpPort"}`.
 */
import { startRelay } from '../../relay/server.js';
import { Store } from '../../server/store/index.js';

const env = process.env;
const store = new Store({
  table: env.CHILD_TABLE as string,
  endpoint: env.CHILD_STORE_ENDPOINT,
  region: 'local',
});
const relay = await startRelay({
  store,
  port: 0,
  httpPort: Number(env.CHILD_HTTP_PORT ?? 0),
  httpPublicUrl: env.CHILD_PUBLIC_URL,
  heartbeatMs: Number(env.CHILD_HEARTBEAT_MS ?? 300),
});
process.stdout.write(`${JSON.stringify({ relayId: relay.relayId, httpPort: relay.httpAddress?.port })}\n`);
