/**
 * `rendezvous expose` and `rendezvous connect`: the commands of a hidden or mobile machine. Both
 * the service's CLI (cli/main.ts) and the client package's (cli/client-main.ts) add them, so
 * nothing here may import the store, the local stack or the AWS SDK.
 */
import { createServer, type Socket } from 'node:net';
import { type Command, Option } from 'commander';
import { exposeHiddenServer } from '../client/hidden-server.js';
import { connect as connectToHiddenServer } from '../client/mobile.js';
import { checkConnectOptions } from '../client/options.js';
import { isRendezvousError } from '../core/errors.js';
import { textLog } from '../core/log.js';
import { splice } from '../core/splice.js';
import { fail, hostPort, integer, UsageError, usage } from './program.js';
import { bridgeStdio, EMPTY_RESET_HINT } from './stdio.js';

/** `--api` may be repeated or comma-separated: every URL, in order (one per region). */
function apiUrls(value: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...value
      .split(',')
      .map((u) => u.trim())
      .filter(Boolean),
  ];
}

/** The API URLs of `--api`, else `RENDEZVOUS_API` (comma-separated); the library checks each. */
function apiFrom(opt: string[] | undefined): string[] {
  const api = opt?.length ? opt : apiUrls(process.env.RENDEZVOUS_API ?? '');
  if (api.length === 0) throw new UsageError('--api URL (or RENDEZVOUS_API) is required');
  return api;
}

/**
 * The library's option errors in the CLI's words: the secret is RENDEZVOUS_SECRET, the URLs
 * are `--api`/`--relay` or their variables. Usage errors (exit 2); anything else fails (exit 1).
 */
function optionFailure(err: unknown, atStart = false): never {
  // What the library refuses before it starts (e.g. a secret asking for the original's 40-digit
  // codes) is the configuration's fault, not the network's.
  if (atStart && isRendezvousError(err, 'BAD_REQUEST')) usage(err.message);
  if (!isRendezvousError(err, 'INVALID_OPTION')) fail((err as Error).message);
  const m = /^option (\w+(?:\.\w+)?): (.*)$/.exec(err.message);
  const name = m?.[1];
  const what = m?.[2] ?? err.message;
  if (name === 'secret') usage(`RENDEZVOUS_SECRET: ${what}`);
  if (name === 'api') usage(`--api (or RENDEZVOUS_API): ${what}`);
  if (name === 'relay') usage(`--relay (or RENDEZVOUS_RELAY_HTTP): ${what}`);
  if (name?.startsWith('target')) usage(`--to: ${what}`);
  if (name === 'uuid' || name === 'pool') usage(`--${name}: ${what}`);
  usage(err.message);
}

/** Adds `expose`: the hidden-server agent. */
export function addExposeCommand(program: Command): void {
  program
    .command('expose')
    .description(
      'hidden-server agent: park at the relay and forward each rendezvous to a local port (secret from RENDEZVOUS_SECRET)',
    )
    .requiredOption('--uuid <uuid>', "this hidden server's identity")
    .requiredOption('--to <[host:]port>', 'local service to forward to')
    .addOption(
      new Option('--protocol <protocol>', 'generic (any TCP, via the API) or http (CONNECT to the relay)')
        .choices(['generic', 'http'])
        .default('generic'),
    )
    .option(
      '--api <url>',
      'registration API, generic protocol; repeat or comma-separate for fail-over (default: RENDEZVOUS_API)',
      apiUrls,
    )
    .option('--relay <url>', 'relay HTTP endpoint, http protocol (default: RENDEZVOUS_RELAY_HTTP)')
    .option('--pool <n>', 'parked connections kept ready (1–1000)', integer(1, 1000), 1)
    .action((o) => {
      const secret = process.env.RENDEZVOUS_SECRET;
      if (!secret) usage('RENDEZVOUS_SECRET is not set (the TOTP secret from `rendezvous provision`)');
      const http = o.protocol === 'http';
      const relay = o.relay ?? process.env.RENDEZVOUS_RELAY_HTTP;
      if (http && !relay) usage('--relay URL (or RENDEZVOUS_RELAY_HTTP) is required');
      let target: { host: string; port: number };
      try {
        target = hostPort(o.to, '127.0.0.1');
      } catch (err) {
        usage(`--to ${o.to}: ${(err as Error).message}`);
      }
      let agent: ReturnType<typeof exposeHiddenServer>;
      try {
        agent = exposeHiddenServer({
          protocol: http ? 'http' : 'generic',
          api: http ? undefined : apiFrom(o.api),
          relay,
          uuid: o.uuid,
          secret,
          target,
          pool: o.pool,
          log: textLog('expose'),
        });
      } catch (err) {
        if (err instanceof UsageError) usage(err.message);
        optionFailure(err, true);
      }
      agent.on('parked', () => undefined);
      agent.on('error', (err: Error) =>
        fail(
          isRendezvousError(err, 'AUTH_FAILED')
            ? `authentication failed: the registry does not know uuid ${o.uuid} or RENDEZVOUS_SECRET is wrong (a local stack started with --memory, or from another folder, forgets its identities: provision again)`
            : err.message,
        ),
      );
      const stop = () => {
        agent.close();
        process.exit(0);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
}

/** Adds `connect`: the mobile client, on stdin/stdout or a local port. */
export function addConnectCommand(program: Command): void {
  program
    .command('connect')
    .description('mobile client: reach a hidden server on stdin/stdout (ssh ProxyCommand) or a local port')
    .requiredOption('--uuid <uuid>', 'the hidden server to reach')
    .option(
      '--api <url>',
      'registration API; repeat or comma-separate for fail-over (default: RENDEZVOUS_API)',
      apiUrls,
    )
    .option('--listen <[host:]port>', 'listen locally; each accepted connection is one rendezvous')
    .action(async (o) => {
      const api = apiFrom(o.api);
      try {
        // A malformed --api is said once, before anything listens or dials.
        checkConnectOptions({ api, uuid: o.uuid });
      } catch (err) {
        optionFailure(err, true);
      }
      let at: { host: string; port: number } | undefined;
      try {
        at = o.listen === undefined ? undefined : hostPort(o.listen, '127.0.0.1');
      } catch (err) {
        usage(`--listen ${o.listen}: ${(err as Error).message}`);
      }
      if (!at) {
        let socket: Socket;
        try {
          socket = await connectToHiddenServer({ api, uuid: o.uuid });
        } catch (err) {
          optionFailure(err);
        }
        process.exit(await bridgeStdio(socket));
      }
      const log = textLog('connect');
      const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (local) => {
        local.on('error', () => local.destroy());
        connectToHiddenServer({ api, uuid: o.uuid }).then(
          (remote) => {
            // A reset before any byte is how a hidden agent says its target refused.
            let received = 0;
            remote.on('data', (c: Buffer) => {
              received += c.length;
            });
            remote.on('error', () => {
              if (received === 0) log.warn(EMPTY_RESET_HINT);
            });
            splice(local, remote);
          },
          (err: Error) => {
            log.warn('rendezvous failed', { reason: err.message });
            local.destroy();
          },
        );
      });
      server.on('error', (err) => fail(err.message));
      const port = at.port;
      server.listen(port, at.host, () => {
        const a = server.address();
        log.info(`listening on ${typeof a === 'object' && a ? `${a.address}:${a.port}` : port}`);
      });
    });
}
