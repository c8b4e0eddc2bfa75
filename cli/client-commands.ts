/**
 * `rendezvous expose` and `rendezvous connect`: the commands of a hidden or mobile machine. Both
 * the service's CLI (cli/main.ts) and the client package's (cli/client-main.ts) add them, so
 * nothing here may import the store, the local stack or the AWS SDK.
 */
import { createServer, type Socket } from 'node:net';
import { type Command, Option } from 'commander';
import { formatUptime, healthFields, PROBE_EVERY_MS } from '../client/agent-report.js';
import { exposeHiddenServer, QUOTA_RECHECK_MS } from '../client/hidden-server.js';
import { connect as connectToHiddenServer, rendezvousIdOf } from '../client/mobile.js';
import { checkConnectOptions } from '../client/options.js';
import { isRendezvousError, secondsToNextMonth } from '../core/errors.js';
import { jsonLog, type Log, textLog } from '../core/log.js';
import { splice } from '../core/splice.js';
import { fail, hostPort, integer, UsageError, usage, uuidOption } from './program.js';
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

/**
 * `connect`'s words for a rendezvous that failed: a spent quota says whose, what can be done and
 * when the month ends (the relay's own words are only `quota exceeded`); anything else its message.
 */
function connectFailure(err: unknown, uuid: string): string {
  if (!isRendezvousError(err, 'QUOTA_EXCEEDED')) return (err as Error).message;
  const inMs = (err.retryAfter ?? secondsToNextMonth(Date.now())) * 1000;
  return `quota exceeded for ${uuid}: the hidden server's monthly quota is spent; try again once its operator raises it, or after the month ends (in ${formatUptime(inMs)})`;
}

/** `--log-format`: text lines for people (default), or the JSON records of core/log.ts. */
const logFormatOption = () =>
  new Option('--log-format <format>', 'text (for people) or json (one record per line), on stderr')
    .choices(['text', 'json'])
    .default('text');

/**
 * The log of `expose` (service `agent`) or `connect` (service `connect`). Always stderr: `connect`'s
 * stdout may be the ssh stream, and one place for both keeps them alike.
 */
function commandLog(format: string, textPrefix: string, service: string): Log {
  return format === 'json' ? jsonLog(service, process.stderr) : textLog(textPrefix, process.stderr);
}

/**
 * Logs one `connect` rendezvous's end (event `rendezvous`, with the relay's rid) once `socket`
 * closes: bytes each way from the socket's own counters, minus what the handshake carried.
 */
function logConnectEnd(log: Log, socket: Socket, uuid: string, localReset: () => boolean): void {
  const startedAt = Date.now();
  const readBase = socket.bytesRead - socket.readableLength;
  const writeBase = socket.bytesWritten;
  let hiddenReset = false;
  socket.on('error', () => {
    hiddenReset = true;
  });
  socket.once('close', () => {
    const end = hiddenReset ? 'hidden_reset' : localReset() ? 'local_reset' : 'closed';
    (end === 'closed' ? log.info : log.warn)('rendezvous ended', {
      event: 'rendezvous',
      rid: rendezvousIdOf(socket),
      uuid,
      bytesToHidden: socket.bytesWritten - writeBase,
      bytesToMobile: socket.bytesRead - readBase,
      durationMs: Date.now() - startedAt,
      end,
    });
  });
}

/** Adds `expose`: the hidden-server agent. */
export function addExposeCommand(program: Command): void {
  program
    .command('expose')
    .description(
      'hidden-server agent: park at the relay and forward each rendezvous to a local port (secret from RENDEZVOUS_SECRET)',
    )
    .requiredOption('--uuid <uuid>', "this hidden server's identity", uuidOption)
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
    .addOption(
      new Option(
        '--auth <how>',
        'proof (one-time proofs only), code (short TOTP codes only); default: a proof, falling back to codes against a server without proofs',
      ).choices(['proof', 'code']),
    )
    .addOption(
      new Option(
        '--code-encoding <encoding>',
        "how codes are computed: rfc (RFC 6238), or speakeasy (the original's, for binary secrets)",
      ).choices(['rfc', 'speakeasy']),
    )
    .option(
      '--code-digits <n>',
      "send n-digit codes (6–10, the original's rule: the last n digits, unpadded) to an original server",
      integer(6, 10),
    )
    .addOption(logFormatOption())
    .option(
      '--status-every <seconds>',
      'print a health line every N seconds (0: never; SIGUSR2 prints one at any time)',
      integer(0, 86_400),
      0,
    )
    .option(
      '--probe-every <seconds>',
      'probe the target with a TCP connect every N seconds while idle (0: never)',
      integer(0, 86_400),
      PROBE_EVERY_MS / 1000,
    )
    .option(
      '--quota-recheck <seconds>',
      'after a quota refusal, park again within N seconds at most (sooner when the month ends)',
      integer(1, 86_400),
      QUOTA_RECHECK_MS / 1000,
    )
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
      const log = commandLog(o.logFormat, 'expose', 'agent');
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
          auth: o.auth,
          codeEncoding: o.codeEncoding,
          codeDigits: o.codeDigits,
          probeEveryMs: o.probeEvery * 1000,
          quotaRecheckMs: o.quotaRecheck * 1000,
          log,
        });
      } catch (err) {
        if (err instanceof UsageError) usage(err.message);
        optionFailure(err, true);
      }
      agent.on('parked', () => undefined);
      // The health line: on SIGUSR2 (SIGUSR1 belongs to Node's inspector) and every --status-every.
      const health = () => log.info('health', healthFields(agent.status()));
      process.on('SIGUSR2', health);
      if (o.statusEvery > 0) setInterval(health, o.statusEvery * 1000).unref();
      // The verdict in one line: only what the server can prove (client/codes.ts).
      agent.on('error', (err: Error) =>
        fail(
          isRendezvousError(err, 'AUTH_FAILED')
            ? `${err.message} for uuid ${o.uuid} (the server cannot tell which; a local stack started with --memory, or from another folder, forgets its identities)`
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
    .requiredOption('--uuid <uuid>', 'the hidden server to reach', uuidOption)
    .option(
      '--api <url>',
      'registration API; repeat or comma-separate for fail-over (default: RENDEZVOUS_API)',
      apiUrls,
    )
    .option('--listen <[host:]port>', 'listen locally; each accepted connection is one rendezvous')
    .addOption(logFormatOption())
    .action(async (o, cmd: Command) => {
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
          if (isRendezvousError(err, 'QUOTA_EXCEEDED')) fail(connectFailure(err, o.uuid));
          optionFailure(err);
        }
        // On stdio (an ssh ProxyCommand, whose stderr reaches the user's terminal) records are
        // written only when asked for with --log-format.
        if (cmd.getOptionValueSource('logFormat') === 'cli')
          logConnectEnd(commandLog(o.logFormat, 'connect', 'connect'), socket, o.uuid, () => false);
        const code = await bridgeStdio(socket);
        // Let the record of the close be written before exiting.
        await new Promise((r) => setImmediate(r));
        process.exit(code);
      }
      const log = commandLog(o.logFormat, 'connect', 'connect');
      const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (local) => {
        local.on('error', () => local.destroy());
        connectToHiddenServer({ api, uuid: o.uuid }).then(
          (remote) => {
            let localReset = false;
            local.on('error', () => {
              localReset = true;
            });
            logConnectEnd(log, remote, o.uuid, () => localReset);
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
            local.destroy();
            // A URL that is not a registration API (or a relay) will not get better: stop.
            if (isRendezvousError(err, 'PROTOCOL')) fail(err.message);
            log.warn('rendezvous failed', { reason: connectFailure(err, o.uuid) });
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
