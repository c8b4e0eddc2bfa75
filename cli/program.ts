/**
 * What both command-line programs share (the service's `rendezvous` and the client package's):
 * the version, option parsers, and how a run ends. A usage error — an unknown command or option,
 * a missing or malformed value — is one line on stderr and exit 2; any other failure is one
 * line and exit 1; neither ever shows a stack trace. Every command answers `--help` and
 * `--version`.
 */
import { createRequire } from 'node:module';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { printable } from '../core/printable.js';
import { isUuid, UUID_RULE } from '../core/uuid.js';

// Replaced by the bundler (scripts/build.mjs) with the package's version; from source (tsx) it
// is undefined and the version comes from the repository's package.json.
declare const RENDEZVOUS_VERSION: string | undefined;

/** The version `--version` prints. */
export const VERSION: string =
  typeof RENDEZVOUS_VERSION === 'string'
    ? RENDEZVOUS_VERSION
    : (createRequire(import.meta.url)('../package.json') as { version: string }).version;

/** A usage error raised inside an action: one line, exit 2. */
export class UsageError extends Error {}

/** Ends the process with a usage error: `rendezvous: <message>` and exit 2. */
export function usage(message: string): never {
  // Messages quote input (arguments, a server's diagnostic): its control characters are escaped.
  process.stderr.write(`rendezvous: ${printable(message)}\n`);
  process.exit(2);
}

/** Ends the process with a failure that is not a usage error: one line, exit 1. */
export function fail(message: string): never {
  process.stderr.write(`rendezvous: ${printable(message)}\n`);
  process.exit(1);
}

/**
 * The line a failure prints: an error's `detail` when it has one (a store failure's cause, naming
 * the setting: `store: table "X" not found at … (RENDEZVOUS_TABLE)`), else its message.
 */
export function messageOf(err: unknown): string {
  const detail = (err as { detail?: unknown } | undefined)?.detail;
  if (typeof detail === 'string' && detail) return detail;
  return err instanceof Error ? err.message : String(err);
}

/** Option parser: a TCP port, 0–65535 (0 picks a free one). */
export function port(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError('not a port number');
  return n;
}

/** Option parser factory: an integer from `min` to `max` (`--pool abc` is an error, not 1). */
export function integer(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`an integer from ${min} to ${max} is required`);
    return n;
  };
}

/** `[host:]port` (an IPv6 host in brackets); throws InvalidArgumentError for a bad port. */
export function hostPort(value: string, defaultHost: string): { host: string; port: number } {
  const i = value.lastIndexOf(':');
  const host = i === -1 ? defaultHost : value.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host: host || defaultHost, port: port(i === -1 ? value : value.slice(i + 1)) };
}

/** A program whose parse errors `runProgram` turns into one-line usage errors. */
export function newProgram(name: string, description: string): Command {
  return new Command(name).description(description);
}

const QUIET_EXITS = new Set(['commander.helpDisplayed', 'commander.version', 'commander.help']);

/**
 * Parses `argv` and runs the chosen command. Adds `--version` to every command, and makes every
 * way out one line: usage errors exit 2, other failures exit 1.
 */
export async function runProgram(program: Command, argv: string[]): Promise<void> {
  // Every command, subcommands of a group (`identities list`) too.
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const c of all(program)) {
    c.version(VERSION, '-V, --version', 'print the version');
    c.exitOverride();
    // Commander's own message is replaced by the one line below.
    c.configureOutput({ outputError: () => undefined });
  }
  const args = argv.slice(2);
  const group = program.commands.find((c) => c.name() === args[0]);
  const inner = group?.commands.find((c) => c.name() === args[1]);
  // The words naming the command that failed: `identities rotate`, `provision`, or none.
  const named = [group, inner]
    .filter((c): c is Command => Boolean(c))
    .map((c) => c.name())
    .join(' ');
  const seeHelp = `see '${program.name()}${named ? ` ${named}` : ''} --help'`;
  if (args.length === 0)
    usage(`a command is required: ${program.commands.map((c) => c.name()).join(', ')} (${seeHelp})`);
  if (
    group?.commands.length &&
    (args.length === 1 || (!inner && args[1] !== 'help' && !args[1]?.startsWith('-')))
  )
    usage(
      `${group.name()}: ${args[1] ? `unknown command '${args[1]}'` : 'a command is required'}: ${group.commands.map((c) => c.name()).join(', ')} (${seeHelp})`,
    );
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (QUIET_EXITS.has(err.code) && err.exitCode === 0) return;
      // Commander puts a near miss's hint on a second line: it joins the one line instead.
      const message = err.message.replace(/^error: /, '');
      const hint = /\n\(Did you mean (.+)\?\)\s*$/.exec(message);
      const first = hint ? message.slice(0, hint.index) : message.trimEnd().replace(/\s*\n\s*/g, ' ');
      usage(`${named ? `${named}: ` : ''}${first} (${hint ? `did you mean ${hint[1]}?; ` : ''}${seeHelp})`);
    }
    if (err instanceof UsageError) usage(err.message);
    fail(messageOf(err));
  }
}

/**
 * Option parser: a hidden-server uuid, checked here so a malformed one is a usage error (exit 2)
 * naming the rule, rather than a request the API refuses again and again.
 */
export function uuidOption(value: string): string {
  if (!isUuid(value)) throw new InvalidArgumentError(`a uuid is ${UUID_RULE}`);
  return value;
}
