/**
 * The service under test in `npm run bench`: `rendezvous dev --memory` (the registration API and
 * its store) built fresh, relay processes from the production bundle as the container runs them,
 * and the two client moves every relay group makes: register a hidden server, park a socket.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { currentCode } from '../core/totp.js';
import { provisionIdentity } from '../server/identities.js';
import { Store } from '../server/store/index.js';
import { dial, freePort, RELAY_MALLOC_ENV, RELAY_NODE_FLAGS, ROOT, spawnReady, track } from './harness.js';

/** The store's table name in the dev stack. */
export const TABLE = 'rendezvous';
const SECRET = 'bench-cluster-secret';
/** Parked sockets the memory groups hold at their smallest size (a relay started here takes more). */
export const PARKED = 10_000;

/** The running dev stack: its store and where its API and store listen. */
export interface Service {
  store: Store;
  apiUrl: string;
  storeEndpoint: string;
}

/** A relay process under test: its pid (for CPU) and its client port. */
export interface RelayProcess {
  child: ChildProcess;
  pid: number;
  port: number;
}

/** Builds dist/ and starts `rendezvous dev --memory` on free ports (killed when the bench ends). */
export async function startService(): Promise<Service> {
  execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: ROOT, stdio: 'ignore' });
  const dev = track(
    await spawnReady(
      process.execPath,
      [
        join(ROOT, 'bin/rendezvous.js'),
        'dev',
        '--memory',
        '--api-port',
        '0',
        '--relay-port',
        '0',
        '--http-port',
        '0',
        '--store-port',
        '0',
      ],
      { POWERTOOLS_LOG_LEVEL: 'ERROR' },
      /^ready$/m,
    ),
  );
  const storeEndpoint = /AWS_ENDPOINT_URL_DYNAMODB=(\S+)/.exec(dev.out())?.[1] as string;
  const apiUrl = /RENDEZVOUS_API=(\S+)/.exec(dev.out())?.[1] as string;
  const store = new Store({ table: TABLE, endpoint: storeEndpoint, region: 'local' });
  return { store, apiUrl, storeEndpoint };
}

/**
 * A relay process from the production bundle (dist/relay.mjs), as the container runs it; with
 * `cli`, as `rendezvous relay` (bin/rendezvous.js, which runs the same bundle with the same flags
 * as its child: the pid is the launcher's, whose CPU figure includes its child's); `bundle`, another
 * build of the relay (a baseline to compare with); `env`, settings added to the relay's environment.
 */
export async function startRelayProcess(
  service: Service,
  {
    cli = false,
    bundle = join(ROOT, 'dist/relay.mjs'),
    env = {},
  }: { cli?: boolean; bundle?: string; env?: Record<string, string> } = {},
): Promise<RelayProcess> {
  const port = await freePort();
  const r = track(
    await spawnReady(
      process.execPath,
      cli
        ? [join(ROOT, 'bin/rendezvous.js'), 'relay']
        : // BENCH_RELAY_FLAGS: node flags for the relays only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
          // The node flags of relay/Dockerfile's ENTRYPOINT, so the relay is measured as deployed.
          [...RELAY_NODE_FLAGS, ...(process.env.BENCH_RELAY_FLAGS?.split(' ').filter(Boolean) ?? []), bundle],
      {
        ...RELAY_MALLOC_ENV,
        AWS_ENDPOINT_URL_DYNAMODB: service.storeEndpoint,
        AWS_REGION: 'local',
        RENDEZVOUS_TABLE: TABLE,
        RELAY_BIND: '127.0.0.1',
        RELAY_PORT: String(port),
        RELAY_HTTP_PORT: 'off',
        RELAY_PEER_PORT: '0',
        RELAY_PEER_HOST: '127.0.0.1',
        RELAY_CLUSTER_SECRET: SECRET,
        RELAY_MAX_PARKED: String(PARKED + 100),
        RELAY_MAX_HANDSHAKES_PER_SOURCE: '100000',
        RELAY_MAX_SPLICES_PER_SOURCE: '100000',
        RELAY_MAX_HANDSHAKES: '100000',
        ...env,
      },
      /relay listening/,
    ),
  );
  return { child: r.child, pid: r.child.pid as number, port };
}

/** Registers hidden server `uuid` through the API (code checked) and returns its cookie. */
export async function registerCookie(service: Service, uuid: string): Promise<string> {
  const id = await provisionIdentity(service.store, { uuid });
  const res = await fetch(`${service.apiUrl}/?uuid=${uuid}&response=${currentCode(id)}`, { method: 'PUT' });
  return ((await res.json()) as { result: { cookie: string } }).result.cookie.slice(1);
}

/** Parks one raw hidden socket on `port` with cookie `c`. */
export async function park(port: number, c: string): Promise<Socket> {
  const s = await dial(port);
  s.write(`R${c}\n`);
  return s;
}
