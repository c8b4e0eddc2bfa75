/**
 * One relay as a separate process (`rendezvous relay`, as the container runs it), optionally under
 * a descriptor limit (`ulimit -n`, as the task definition sets one), reading its JSON log.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { BIN } from './cli.js';

/** A relay process and the ports its start line named. */
export interface RelayProcess {
  child: ChildProcess;
  port: number;
  httpPort: number;
  health: number;
  /** The start line ("relay listening"), parsed. */
  listening: Record<string, string | undefined>;
  exit: Promise<number | null>;
  /** Everything the relay wrote on stdout so far. */
  output: () => string;
}

/**
 * Starts a relay on the store at `storeEndpoint` (table `table`) with every port picked by the
 * system; `env` overrides. With `nofile`, under that descriptor limit.
 */
export async function spawnRelayProcess(opts: {
  storeEndpoint: string;
  table: string;
  env?: Record<string, string>;
  nofile?: number;
}): Promise<RelayProcess> {
  const [cmd, args] = opts.nofile
    ? ['sh', ['-c', `ulimit -n ${opts.nofile} && exec "$0" "$@"`, process.execPath, BIN, 'relay']]
    : [process.execPath, [BIN, 'relay']];
  const child = spawn(cmd as string, args as string[], {
    env: {
      ...process.env,
      AWS_ENDPOINT_URL_DYNAMODB: opts.storeEndpoint,
      AWS_REGION: 'local',
      RENDEZVOUS_TABLE: opts.table,
      RELAY_BIND: '127.0.0.1',
      RELAY_PORT: '0',
      RELAY_HTTP_PORT: '0',
      RELAY_PEER_PORT: '0',
      RELAY_HEALTH_PORT: '0',
      RELAY_PEER_HOST: '127.0.0.1',
      RELAY_CLUSTER_SECRET: 'process-cluster-secret',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let text = '';
  child.stdout?.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const listening = await new Promise<Record<string, string | undefined>>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`relay did not start: ${text}`)), 60_000);
    const look = () => {
      for (const line of text.split('\n')) {
        if (line.includes('"relay listening"')) {
          clearTimeout(t);
          child.stdout?.off('data', look);
          resolve(JSON.parse(line));
          return;
        }
      }
    };
    child.stdout?.on('data', look);
    void exit.then((code) => reject(new Error(`relay exited (${code}) before listening: ${text}`)));
  });
  const portOf = (address: string | undefined) => Number(address?.split(':').pop());
  return {
    child,
    port: portOf(listening.generic),
    httpPort: portOf(listening.http),
    health: portOf(listening.health),
    listening,
    exit,
    output: () => text,
  };
}
