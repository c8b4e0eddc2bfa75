/**
 * The `rendezvous` command. Parsing only: each subcommand reads its options and environment
 * and calls into local/, client/ or relay/.
 */
import { pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { ADMIN_PORT, startAdminConsole } from '../admin/server.js';
import { isRendezvousError } from '../core/errors.js';
import { textLog } from '../core/log.js';
import { claimDataDir, DEFAULT_DATA_DIR } from '../local/data-dir.js';
import {
  LOCAL_DEFAULTS,
  LOCAL_MAX_FAILURES_PER_SOURCE,
  LOCAL_RELAY_LIMITS,
  startLocalStack,
} from '../local/stack.js';
import { relayLimitsFromEnv } from '../relay/main.js';
import { authPolicyFromEnv, DEFAULT_TABLE, intFromEnv } from '../server/config.js';
import { provisionIdentity } from '../server/identities.js';
import { probeStore, Store } from '../server/store/index.js';
import { addClaimsRegionCommand } from './claims-region.js';
import { addConnectCommand, addExposeCommand } from './client-commands.js';
import { addIdentitiesCommand } from './identities.js';
import { addCompatCommand, addImportCommand, existingSecret, provisionCompat } from './import/command.js';
import { originalRecordOf } from './import/import.js';
import { fail, messageOf, newProgram, port, runProgram, usage, uuidOption } from './program.js';
import { addSmokeCommand } from './smoke.js';

/** The uuid option parser (in program.ts, shared with the client package's commands). */
export { uuidOption };

// The SDK warns on Node 20 at the first client; the CLI's users can do nothing about it here.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** What each port of `dev` is, and the flag (or variable) that moves it. */
const DEV_PORTS = [
  ['storePort', "the store's port", '--store-port'],
  ['apiPort', "the API's port", '--api-port'],
  ['relayPort', "the relay's port", '--relay-port'],
  ['httpPort', "the relay's HTTP port", '--http-port'],
] as const;

/** Why `dev` could not start, naming the flag that moves a port already in use. */
export function devStartFailure(err: unknown, o: Record<string, unknown>): string {
  const e = err as NodeJS.ErrnoException & { port?: number; address?: string };
  if (e.code === 'EADDRINUSE' && e.port) {
    const named = DEV_PORTS.find(([key]) => o[key] === e.port);
    const health = process.env.RELAY_HEALTH_PORT === String(e.port);
    const which = named
      ? `${named[1]}; choose another with ${named[2]}`
      : health
        ? "the relay's health port; choose another with RELAY_HEALTH_PORT"
        : 'choose other ports with --api-port, --relay-port, --http-port, --store-port';
    return `${e.address ?? '127.0.0.1'}:${e.port} is in use: ${which} (0 picks a free one)`;
  }
  return (err as Error).message;
}

/** Builds the command tree (exported for tests of the parser). */
export function buildCli(): Command {
  const program = newProgram('rendezvous', 'Reach hidden servers behind NAT through a rendezvous relay');

  program
    .command('dev')
    .description('run the whole service locally: embedded store, registration API, relay')
    .option('--api-port <port>', 'registration API port', port, LOCAL_DEFAULTS.apiPort)
    .option('--relay-port <port>', 'relay port (generic protocol)', port, LOCAL_DEFAULTS.relayPort)
    .option('--http-port <port>', 'relay port (HTTP-specific protocol)', port, LOCAL_DEFAULTS.httpPort)
    .option('--store-port <port>', 'embedded DynamoDB-compatible store port', port, LOCAL_DEFAULTS.storePort)
    .option(
      '--data <dir>',
      `keep the store on disk in this folder (default: ${DEFAULT_DATA_DIR} in the current folder)`,
    )
    .option('--memory', 'a throw-away store in memory: identities are gone when it stops')
    .option('--table <name>', 'table name', DEFAULT_TABLE)
    .action(async (o) => {
      if (o.memory && o.data) usage('--memory and --data exclude each other');
      // On disk by default: identities and registrations outlive a restart of `npm start`.
      let dataDir: string | undefined;
      try {
        dataDir = o.memory ? undefined : claimDataDir(o.data ?? DEFAULT_DATA_DIR);
      } catch (err) {
        fail(`cannot start: ${(err as Error).message}`);
      }
      // Every local client shares 127.0.0.1, so one address's guess budget would be everyone's.
      const localEnv = {
        RENDEZVOUS_MAX_FAILURES_PER_SOURCE: String(LOCAL_MAX_FAILURES_PER_SOURCE),
        RELAY_MAX_SPLICES_PER_SOURCE: String(LOCAL_RELAY_LIMITS.maxSplicesPerSource),
        ...process.env,
      };
      const stack = await startLocalStack({
        apiPort: o.apiPort,
        relayPort: o.relayPort,
        httpPort: o.httpPort,
        storePort: o.storePort,
        clusterSecret: process.env.RELAY_CLUSTER_SECRET || undefined,
        // The relay and API limits a deployment reads from its environment apply here too.
        relay: {
          ...relayLimitsFromEnv(localEnv),
          // /healthz and /metrics (Prometheus text), as on a deployed relay, when asked for.
          ...(process.env.RELAY_HEALTH_PORT ? { healthPort: intFromEnv('RELAY_HEALTH_PORT', 0) } : {}),
        },
        policy: authPolicyFromEnv(localEnv),
        dataDir,
        table: o.table,
        log: textLog('relay'),
        apiLog: textLog('api'),
      }).catch((err) => fail(`cannot start: ${devStartFailure(err, o)}`));
      const out = process.stdout;
      out.write('rendezvous local stack\n');
      out.write(
        `  store  ${stack.storeEndpoint} (${
          dataDir
            ? `on disk: ${dataDir}, kept across restarts; --memory for a throw-away store`
            : 'in memory: forgotten when this stops'
        }), table ${stack.table}\n`,
      );
      out.write(`  api    ${stack.apiUrl}\n`);
      out.write(
        `  relay  ${stack.relayHost}:${stack.relayPort} (generic), ${stack.env.RENDEZVOUS_RELAY_HTTP} (HTTP)\n`,
      );
      const health = stack.relay.healthAddress;
      if (health) out.write(`  health http://${health.address}:${health.port}/healthz and /metrics\n`);
      if (stack.peer) {
        out.write(`  peer   ${stack.peer} (cluster: extra relays started with \`rendezvous relay\`,\n`);
        out.write('         the same RELAY_CLUSTER_SECRET and this store join it)\n');
      }
      out.write('environment for the CLI in another terminal:\n');
      for (const [k, v] of Object.entries(stack.env)) out.write(`  export ${k}=${v}\n`);
      out.write('ready\n');
      let stopping = false;
      const stop = () => {
        if (stopping) return;
        stopping = true;
        out.write('stopping\n');
        void stack.close().then(() => process.exit(0));
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });

  program
    .command('provision')
    .description('create a hidden-server identity (uuid + TOTP secret) in the table')
    .option('--uuid <uuid>', 'the identity (default: a random UUID)', uuidOption)
    .option('--label <label>', 'a note for the operator')
    .option('--table <name>', 'table (default: RENDEZVOUS_TABLE or rendezvous)')
    .option(
      '--json',
      'print {"uuid","secret","digits","step","otpauth"} (with --compat: the original\'s record)',
    )
    .option('--secret-env', 'use the existing secret in RENDEZVOUS_SECRET (base32 or otpauth:// URI)')
    .option('--secret-stdin', 'read an existing secret (base32 or otpauth:// URI) from stdin')
    .option(
      '--compat',
      "check codes the original's way (node-rendezvous clients); a fresh secret is 40 ASCII characters",
    )
    .action(async (o) => {
      const store = new Store({ table: o.table ?? process.env.RENDEZVOUS_TABLE ?? DEFAULT_TABLE });
      try {
        const secret = await existingSecret(o);
        const id = await provisionIdentity(store, {
          uuid: o.uuid,
          label: o.label,
          secret,
          compat: provisionCompat(o, secret),
        });
        if (secret !== undefined) {
          // An existing secret is the caller's already: never print it back.
          process.stdout.write(
            o.json
              ? `${JSON.stringify({ uuid: id.uuid, digits: id.digits, step: id.step, compat: id.compat })}\n`
              : `uuid     ${id.uuid}\nsecret   (the one given; not shown)\n${id.compat ? `compat   ${JSON.stringify(id.compat)}\n` : ''}`,
          );
        } else if (o.json && id.compat) {
          process.stdout.write(`${JSON.stringify(originalRecordOf(id))}\n`);
        } else if (o.json) {
          const { uuid, secret, digits, step, otpauth } = id;
          process.stdout.write(`${JSON.stringify({ uuid, secret, digits, step, otpauth })}\n`);
        } else {
          process.stdout.write(
            `uuid     ${id.uuid}\nsecret   ${id.secret}\ndigits   ${id.compat ? 'as the original (length 40)' : id.digits}\nstep     ${id.step}s\notpauth  ${id.compat ? originalRecordOf(id).authURL : id.otpauth}\n` +
              (id.compat
                ? `compat   ${JSON.stringify(id.compat)}\n` +
                  "\nThe secret is shown once. Put it in the hidden server's node-rendezvous configuration\n" +
                  '(authParams.base32, length 40; `--json` prints the whole record).\n'
                : '\nThe secret is shown once. Hand it to the hidden server, e.g.:\n' +
                  `  RENDEZVOUS_SECRET=${id.secret} rendezvous expose --api URL --uuid ${id.uuid} --to 127.0.0.1:22\n`),
          );
        }
      } catch (err) {
        // A secret from the environment is named by its variable, so the user knows what to fix.
        const message = isRendezvousError(err)
          ? messageOf(err)
          : `provision failed: ${(err as Error).message}`;
        fail(o.secretEnv && /secret/i.test(message) ? `RENDEZVOUS_SECRET: ${message}` : message);
      } finally {
        store.close();
      }
    });

  addExposeCommand(program);
  addConnectCommand(program);
  addIdentitiesCommand(program, uuidOption);

  program
    .command('admin')
    .description(
      'operator console on 127.0.0.1: list, create, rotate, disable and delete hidden-server identities',
    )
    .option('--port <port>', 'console port', port, ADMIN_PORT)
    .option('--table <name>', 'table (default: RENDEZVOUS_TABLE or rendezvous)')
    .action(async (o) => {
      const store = new Store({ table: o.table ?? process.env.RENDEZVOUS_TABLE ?? DEFAULT_TABLE });
      // A wrong table or endpoint is said at start, in one line, not on the console's first page.
      await probeStore(store).catch((err) => {
        store.close();
        fail(`cannot start: ${messageOf(err)}`);
      });
      const admin = await startAdminConsole({
        store,
        port: o.port,
        apiUrl: process.env.RENDEZVOUS_API,
        log: textLog('admin'),
      }).catch((err) => fail(`cannot start: ${(err as Error).message}`));
      process.stdout.write(`rendezvous admin console: ${admin.url}/ (127.0.0.1 only; Ctrl-C stops it)\n`);
      const stop = () => void admin.close().then(() => process.exit(0));
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });

  program
    .command('relay')
    .description('run a relay configured from the environment (RELAY_PORT, RENDEZVOUS_TABLE, …)')
    .action(async () => {
      // The production bundle with the container's V8 flags (cli/relay-exec.ts), not tsx.
      const { runProductionRelay } = await import('./relay-exec.js');
      process.exit(await runProductionRelay().catch((err) => fail((err as Error).message)));
    });

  addImportCommand(program, fail);
  addCompatCommand(program, fail);
  addSmokeCommand(program, fail);
  addClaimsRegionCommand(program, fail);

  return program;
}

/** Runs the CLI with `argv`. */
export async function runCli(argv: string[] = process.argv): Promise<void> {
  await runProgram(buildCli(), argv);
}

if (
  /(cli[\\/]main\.ts|cli\.mjs)$/.test(process.argv[1] ?? '') &&
  import.meta.url === pathToFileURL(process.argv[1] ?? '').href
) {
  void runCli();
}
