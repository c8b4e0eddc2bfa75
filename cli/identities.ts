/**
 * `rendezvous identities list | show | rotate | disable | enable | unlock | delete`: what the
 * operator console does to identities, from a shell or a script (`--json` on each), against the
 * table `provision` uses (RENDEZVOUS_TABLE, AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION, or --table):
 * the local store and a deployed table alike. The work is server/identities.ts's, as the
 * console's is; the rows are the console's (admin/rows.ts). The console's safeguards hold: a
 * rotated secret is printed once and never listed; a deletion asks on the terminal unless `--yes`,
 * and without a terminal it is refused rather than done unasked.
 */
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { identityRows, rowsOf } from '../admin/rows.js';
import { RendezvousError } from '../core/errors.js';
import { authPolicyFromEnv, DEFAULT_TABLE } from '../server/config.js';
import {
  deleteIdentity,
  type ProvisionedIdentity,
  requireIdentity,
  rotateIdentitySecret,
  setIdentityDisabled,
  unlockIdentity,
} from '../server/identities.js';
import { Store } from '../server/store/index.js';
import { usage } from './program.js';

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

/** Left-aligned columns, two spaces apart. */
function columns(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

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

/** Adds `identities` and its subcommands to `program`. */
export function addIdentitiesCommand(program: Command, uuidOption: (value: string) => string): void {
  const group = program
    .command('identities')
    .description('list, show, rotate, disable, enable, unlock and delete hidden-server identities');

  /** A subcommand with the shared options; `act` gets the store and the parsed options. */
  const sub = <A extends unknown[]>(
    name: string,
    description: string,
    act: (store: Store, o: { json?: boolean; yes?: boolean }, ...args: A) => Promise<void>,
    withUuid = true,
  ) => {
    const c = group.command(name).description(description);
    if (withUuid) c.argument('<uuid>', 'the identity', uuidOption);
    c.option('--json', 'print JSON (for scripts)').option(
      '--table <name>',
      'table (default: RENDEZVOUS_TABLE or rendezvous)',
    );
    c.action(async (...params: unknown[]) => {
      const o = params[withUuid ? 1 : 0] as { json?: boolean; yes?: boolean; table?: string };
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
}
