/**
 * The relay process entry point (container and `rendezvous relay`): reads the environment,
 * starts the relay and its health endpoint, and stops cleanly on SIGTERM/SIGINT.
 *
 *   RELAY_PORT            generic-protocol port (default 8899)
 *   RELAY_BIND            listen address (default 0.0.0.0)
 *   RELAY_HEALTH_PORT     `GET /healthz` port (unset: no health listener)
 *   RELAY_HANDSHAKE_MS    cookie-line deadline (default 10000)
 *   RELAY_PAIR_WAIT_MS    how long a mobile client waits for a parked socket (default 5000)
 *   RENDEZVOUS_TABLE      DynamoDB table (default rendezvous)
 *   AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION   the SDK's standard configuration
 */
import { createServer } from 'node:http';
import { intFromEnv, tableFromEnv } from '../core/config.js';
import { jsonLog, type Log } from '../core/log.js';
import { Store } from '../core/store.js';
import { RELAY_DEFAULTS, type Relay, startRelay } from './server.js';

/** Starts a relay configured from `env`; resolves once it listens. */
export async function runRelayFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  log: Log = jsonLog('relay'),
): Promise<{ relay: Relay; stop: () => Promise<void> }> {
  const store = new Store({ table: tableFromEnv(env) });
  const relay = await startRelay({
    store,
    port: intFromEnv('RELAY_PORT', RELAY_DEFAULTS.port, env),
    host: env.RELAY_BIND || '0.0.0.0',
    handshakeTimeoutMs: intFromEnv('RELAY_HANDSHAKE_MS', RELAY_DEFAULTS.handshakeTimeoutMs, env),
    pairWaitMs: intFromEnv('RELAY_PAIR_WAIT_MS', RELAY_DEFAULTS.pairWaitMs, env),
    log,
  });
  const healthPort = env.RELAY_HEALTH_PORT ? intFromEnv('RELAY_HEALTH_PORT', 0, env) : undefined;
  const health =
    healthPort === undefined
      ? undefined
      : createServer((req, res) => {
          const ok = req.url === '/healthz';
          res.writeHead(ok ? 200 : 404, { 'content-type': 'application/json' });
          res.end(JSON.stringify(ok ? { ok: true, parked: relay.lot.parkedCount } : { error: 'not found' }));
        }).listen(healthPort, env.RELAY_BIND || '0.0.0.0');
  const stop = async () => {
    health?.close();
    await relay.close();
    store.close();
  };
  return { relay, stop };
}

/** Runs until SIGTERM/SIGINT. */
export async function main(): Promise<void> {
  const log = jsonLog('relay');
  const { stop } = await runRelayFromEnv(process.env, log);
  const onSignal = (sig: string) => {
    log.info('stopping', { signal: sig });
    void stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
}

import { pathToFileURL } from 'node:url';

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    process.stderr.write(`relay: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
