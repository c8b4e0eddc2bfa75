/**
 * `rendezvous identities list | show | rotate | disable | enable | unlock | delete | usage |
 * limits`: what the
 * operator console does to identities, from a shell or a script (`--json` on each), against the
 * table `provision` uses (RENDEZVOUS_TABLE, AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION, or --table):
 * the local store and a deployed table alike. The work is server/identities.ts's, as the
 * console's is; the rows are the console's (admin/rows.ts). The console's safeguards hold: a
 * rotated secret is printed once and never listed; a deletion asks on the terminal unless `--yes`,
 * and without a terminal it is refused rather than done unasked. `usage` reads the usage records
 * (one identity: one Query; the month's listing: a Scan of the whole table), `limits` shows or
 * sets an identity's quota, bandwidth and concurrency (a change notice first: relays apply it
 * within a revalidation round).
 */
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { identityRows, rowsOf } from '../admin/rows.js';
import { isRendezvousError, RendezvousError } from '../core/errors.js';
import { authPolicyFromEnv, DEFAULT_TABLE } from '../server/config.js';
import {
  deleteIdentity,
  type ProvisionedIdentity,
  requireIdentity,
  rotateIdentitySecret,
  setIdentityDisabled,
  setIdentityLimits,
  unlockIdentity,
} from '../server/identities.js';
import { checkMonth, Store, usageMonth } from '../server/store/index.js';
import { applyLimits, parseLimits } from '../server/usage-format.js';
import { totalBytes } from '../server/usage-types.js';
import { usage } from './program.js';
import { columns, limitsText, rankingText, usageText } from './usage-text.js';

/** The row columns `list` prints, in order (uuid first: `grep`/`awk` friendly). */
const HEADER = ['UUID', 'LABEL', 'STATE', 'WRONG CODES', 'CREATED', 'LAST SEEN'];

type Row = Awaited<ReturnType<typeof identityRows>>[number];

/** One word for an identity's state, as the console's "Now" column says it. */
const stateOf = (r: Row) => (r.disabled ? 'disabled' : r.parkedOn.length ? 'online' : 'offline');

/** A row's cells for `list`. */
const cells = (r: Row) => [
  r.uuid,
  r.label ?? '-',
  stateOf(r),
  r.lockout.locked ? 'locked' : `${r.lockout.failures}/${r.lockout.limit}`,
  r.createdAt,
  r.lastSeen ?? '-',
];

/** `show`'s lines: one `name value` per fact. */
function details(r: Row): string {
  const proto = (name: string, v: Row['generic']) =>
    `${name.padEnd(10)}${v.parked ? `${v.parked} parked on ${v.relays.map((x) => x.address).join(', ')}` : 'not parked'}${
      v.target ? `, target ${v.target === 'up' ? 'reachable' : 'unreachable'}` : ''
    }${v.last ? `; last rendezvous ${v.last.at} ${v.last.end}` : ''}`;
  return [
    `uuid      ${r.uuid}`,
    `label     ${r.label ?? '-'}`,
    `state     ${stateOf(r)}`,
    `created   ${r.createdAt}`,
    `codes     ${r.compat ? `${r.importedFrom ? `imported: ${r.importedFrom}; ` : ''}${r.compat}` : 'strict'}`,
    `lockout   ${r.lockout.locked ? `locked until ${r.lockout.until}` : `${r.lockout.failures} of ${r.lockout.limit} wrong codes`}`,
    `registered ${r.lastRegistration ?? '-'}${r.region ? ` (${r.region})` : ''}`,
    `last seen ${r.lastSeen ?? '-'}`,
    proto('generic', r.generic),
    proto('http', r.http),
  ].join('\n');
}

/** What a rotation prints: the new secret, once, and how the hidden server uses it. */
function secretText(id: ProvisionedIdentity): string {
  return (
    `uuid     ${id.uuid}\nsecret   ${id.secret}\ndigits   ${id.digits}\nstep     ${id.step}s\notpauth  ${id.otpauth}\n\n` +
    'The secret is shown once; the old one no longer works and the hidden server must be given this.\n' +
    'On the hidden server (the client: npm install -g @rendezvous-relay/client, or until it is on the\n' +
    'registry the tarball `npm pack ./packages/client` makes in the clone):\n' +
    `  export RENDEZVOUS_SECRET=${id.secret} RENDEZVOUS_API=<API URL>\n` +
    `  rendezvous expose --uuid ${id.uuid} --to 127.0.0.1:22\n`
  );
}

/** Asks on the terminal whether to delete `uuid`; true for y/yes. */
async function confirmDelete(uuid: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(
      `Delete identity ${uuid}? Its secret and registration are removed; the hidden server can no longer register. [y/N] `,
    );
    return /^\s*y(es)?\s*$/i.test(answer);
  } finally {
    rl.close();
  }
}

const out = (text: string) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);

/** The options the subcommands take (each its own few). */
interface SubOptions {
  json?: boolean;
  yes?: boolean;
  month?: string;
  quota?: string;
  bandwidth?: string;
  maxConcurrent?: string;
}

/** The store's names of the limits (its refusals start with them), as the options name them. */
const OPTION_NAMES: Record<string, string> = {
  monthlyBytes: 'quota',
  bytesPerSecond: 'bandwidth',
  maxConcurrent: 'max-concurrent',
};

/**
 * Runs `fn`; a BAD_REQUEST it throws (a bad option value, or one the store's range check refuses)
 * is a usage error naming the option: one line, exit 2.
 */
async function asUsage<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isRendezvousError(err, 'BAD_REQUEST'))
      usage(
        `identities ${what}: ${(err as Error).message.replace(/^(\w+):/, (m, f: string) => (OPTION_NAMES[f] ? `${OPTION_NAMES[f]}:` : m))}`,
      );
    throw err;
  }
}

/** Adds `identities` and its subcommands to `program`. */
export function addIdentitiesCommand(program: Command, uuidOption: (value: string) => string): void {
  const group = program
    .command('identities')
    .description(
      'list, show, rotate, disable, enable, unlock and delete hidden-server identities; their usage and limits',
    );

  /** A subcommand with the shared options; `act` gets the store and the parsed options. */
  const sub = <A extends unknown[]>(
    name: string,
    description: string,
    act: (store: Store, o: SubOptions, ...args: A) => Promise<void>,
    withUuid: boolean | 'optional' = true,
  ) => {
    const c = group.command(name).description(description);
    if (withUuid === 'optional') c.argument('[uuid]', 'the identity (none: every identity)', uuidOption);
    else if (withUuid) c.argument('<uuid>', 'the identity', uuidOption);
    c.option('--json', 'print JSON (for scripts)').option(
      '--table <name>',
      'table (default: RENDEZVOUS_TABLE or rendezvous)',
    );
    c.action(async (...params: unknown[]) => {
      const o = params[withUuid ? 1 : 0] as SubOptions & { table?: string };
      const store = new Store({ table: o.table ?? process.env.RENDEZVOUS_TABLE ?? DEFAULT_TABLE });
      try {
        await act(store, o, ...((withUuid ? [params[0]] : []) as A));
      } finally {
        store.close();
      }
    });
    return c;
  };

  const policy = () => authPolicyFromEnv();

  sub(
    'list',
    'every identity: uuid, label, state, wrong codes, created, last seen (never a secret)',
    async (store, o) => {
      const rows = (await identityRows(store, Date.now(), policy())).sort((a, b) =>
        a.uuid.localeCompare(b.uuid),
      );
      out(o.json ? JSON.stringify(rows) : columns([HEADER, ...rows.map(cells)]));
    },
    false,
  );

  sub<[string]>(
    'show',
    'one identity: what the console shows (parks per protocol, lockout, last rendezvous), no secret',
    async (store, o, uuid) => {
      const id = await store.getIdentity(uuid);
      if (!id) throw new RendezvousError('NOT_FOUND', `no such identity: ${uuid}`);
      const [row] = (await rowsOf(store, [id], Date.now(), policy())) as [Row];
      out(o.json ? JSON.stringify(row) : details(row));
    },
  );

  sub<[string]>(
    'rotate',
    'a new secret, printed once; the old one, its registration and parked sockets stop working',
    async (store, o, uuid) => {
      await requireIdentity(store, uuid);
      const id = await rotateIdentitySecret(store, uuid);
      const { secret, digits, step, otpauth } = id;
      out(o.json ? JSON.stringify({ uuid, secret, digits, step, otpauth }) : secretText(id));
    },
  );

  for (const [verb, disabled] of [
    ['disable', true],
    ['enable', false],
  ] as const)
    sub<[string]>(
      verb,
      disabled ? 'refuse its codes; its registration and parked sockets end' : 'accept its codes again',
      async (store, o, uuid) => {
        await requireIdentity(store, uuid);
        await setIdentityDisabled(store, uuid, disabled);
        out(o.json ? JSON.stringify({ uuid, disabled }) : `${uuid} ${verb}d`);
      },
    );

  sub<[string]>('unlock', 'clear its wrong-code counter (end a lockout)', async (store, o, uuid) => {
    await requireIdentity(store, uuid);
    await unlockIdentity(store, uuid);
    out(o.json ? JSON.stringify({ uuid, unlocked: true }) : `${uuid} unlocked`);
  });

  sub<[string]>(
    'delete',
    'remove it for good (asks on the terminal; --yes to skip the question)',
    async (store, o, uuid) => {
      await requireIdentity(store, uuid);
      if (!o.yes) {
        if (!process.stdin.isTTY)
          usage(`identities delete: no terminal to confirm on; add --yes to delete ${uuid}`);
        if (!(await confirmDelete(uuid))) {
          process.stderr.write(`rendezvous: ${uuid} not deleted\n`);
          process.exit(1);
        }
      }
      await deleteIdentity(store, uuid);
      out(o.json ? JSON.stringify({ uuid, deleted: true }) : `${uuid} deleted`);
    },
  ).option('--yes', 'delete without asking');

  sub<[string | undefined]>(
    'usage',
    "one identity's usage (today, this month, the last 30 days; one query), or with no uuid every identity with usage in the month, largest first (a scan of the whole table: mind its cost)",
    async (store, o, uuid) => {
      if (uuid) {
        if (o.month !== undefined)
          usage('identities usage: --month lists every identity: give no uuid with it');
        const now = Date.now();
        const [u, id] = await Promise.all([store.usageOf(uuid, now), store.getIdentity(uuid)]);
        const used = u.days.some(
          (d) => totalBytes(d.totals) > 0 || d.totals.generic.rendezvous + d.totals.http.rendezvous > 0,
        );
        // Usage outlives its identity (it is still billable): a deleted one with usage is shown.
        if (!id && !used) throw new RendezvousError('NOT_FOUND', `no such identity: ${uuid}`);
        const bytes = { today: totalBytes(u.today), month: totalBytes(u.month) };
        out(
          o.json
            ? JSON.stringify({ uuid, exists: Boolean(id), limits: id?.limits ?? {}, bytes, ...u })
            : usageText(uuid, u, id ? undefined : 'identity deleted'),
        );
        return;
      }
      const month =
        o.month === undefined
          ? usageMonth(Date.now())
          : await asUsage('usage', () => checkMonth(o.month as string));
      const ranking = await store.usageRanking(month);
      out(
        o.json
          ? JSON.stringify({
              month,
              identities: ranking.map((r) => ({ uuid: r.uuid, bytes: totalBytes(r.month), totals: r.month })),
            })
          : rankingText(month, ranking),
      );
    },
    'optional',
  ).option('--month <YYYY-MM>', 'the UTC month to list (default: this one); only without a uuid');

  sub<[string]>(
    'limits',
    'show, or set with an option, its monthly quota, bandwidth and concurrent rendezvous (none: no limit); relays apply a change within seconds',
    async (store, o, uuid) => {
      const change = await asUsage('limits', () =>
        parseLimits({ quota: o.quota, bandwidth: o.bandwidth, maxConcurrent: o.maxConcurrent }),
      );
      const id = await store.getIdentity(uuid);
      if (!id) throw new RendezvousError('NOT_FOUND', `no such identity: ${uuid}`);
      let limits = id.limits;
      const setting = Object.keys(change).length > 0;
      if (setting) {
        // The options given change those limits, the others stay (read, then written whole: two
        // operators changing one identity's limits at the same moment, the last write wins).
        limits = applyLimits(id.limits, change);
        await asUsage('limits', () => setIdentityLimits(store, uuid, limits));
      }
      const monthBytes = await store.monthBytes(uuid);
      out(
        o.json
          ? JSON.stringify({ uuid, limits: limits ?? {}, monthBytes })
          : `${limitsText(uuid, limits, monthBytes)}${setting ? '\n\nset: relays apply it within a revalidation round (about 10 s)' : ''}`,
      );
    },
  )
    .option('--quota <size>', 'bytes a UTC month, both ways, both protocols: 10GB, 512GiB, or none')
    .option(
      '--bandwidth <rate>',
      'bytes a second, both ways together: 1MB/s, 800KiB/s (at least 1KiB/s), or none',
    )
    .option('--max-concurrent <n>', 'live rendezvous at once, or none');
}
