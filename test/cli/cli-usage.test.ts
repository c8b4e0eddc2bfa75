/**
 * The service's `rendezvous` command and its usage errors (issue 15): every command answers
 * `--help` and `--version`; a bad option is one line on stderr and exit 2, never a stack trace
 * or the whole help; numeric options are checked rather than read as something else.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildCli } from '../../cli/main.js';
import { exitWithin, runCli, SOURCE_BIN, spawnCli } from '../support/cli.js';

const VERSION = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;

describe('rendezvous (service CLI) usage', () => {
  it('every command has --help, and --version prints the package version', async () => {
    const program = buildCli();
    const names = program.commands.map((c) => c.name());
    expect(names).toEqual(
      expect.arrayContaining(['dev', 'provision', 'expose', 'connect', 'admin', 'relay', 'import', 'compat']),
    );
    // From source, as `npx rendezvous` runs on a fresh clone (the other tests start the bundle).
    const [top, sub, help] = await Promise.all([
      runCli(['--version'], {}, undefined, undefined, SOURCE_BIN),
      runCli(['provision', '--version'], {}, undefined, undefined, SOURCE_BIN),
      runCli(['relay', '--help'], {}, undefined, undefined, SOURCE_BIN),
    ]);
    expect(top.code).toBe(0);
    expect(top.stdout.toString()).toBe(`${VERSION}\n`);
    expect(sub.stdout.toString()).toBe(`${VERSION}\n`);
    expect(help.code).toBe(0);
    expect(help.stdout.toString()).toMatch(/-V, --version/);
  });

  it('a malformed --uuid for expose or connect is a usage error naming the rule, not retried', async () => {
    const env = { RENDEZVOUS_API: '', RENDEZVOUS_SECRET: 'JBSWY3DPEHPK3PXP' };
    // An API that never answers: before the fix, both commands retried against it forever.
    const api = 'http://127.0.0.1:9';
    for (const args of [
      ['expose', '--uuid', 'bad uuid', '--to', '22', '--api', api],
      ['connect', '--uuid', 'bad uuid', '--api', api],
    ]) {
      const child = spawnCli(args, env);
      let stderr = '';
      child.stderr?.on('data', (c) => {
        stderr += c.toString();
      });
      child.stdin?.end();
      const code = await exitWithin(child, 20_000);
      const what = `rendezvous ${args.join(' ')}: ${stderr}`;
      expect(code, what).toBe(2);
      expect(stderr, what).toMatch(
        new RegExp(
          `^rendezvous: ${args[0]}: option '--uuid <uuid>' argument 'bad uuid' is invalid\\. a uuid is .*letters, digits, "\\.", "_", ":" or "-"`,
        ),
      );
      expect(stderr.trimEnd().split('\n'), what).toHaveLength(1);
    }
  }, 60_000);

  it('bad options are one line with exit 2, without a stack trace', async () => {
    const cases: Array<[string[], RegExp]> = [
      [[], /a command is required: dev, provision/],
      [['dev', '--memory', '--api-port', 'abc'], /dev: option '--api-port <port>' argument 'abc' is invalid/],
      [['dev', '--memory', '--data', 'x'], /--memory and --data exclude each other/],
      [['admin', '--port', '8o8o'], /admin: option '--port <port>' argument '8o8o' is invalid/],
      [['expose', '--uuid', 'u', '--to', '22', '--pool', 'abc'], /--pool <n>' argument 'abc' is invalid/],
      [['connect', '--uuid', 'u'], /--api URL \(or RENDEZVOUS_API\) is required/],
      // A malformed value is a usage error too, and says what a uuid may hold.
      [
        ['provision', '--uuid', 'bad uuid'],
        /provision: option '--uuid <uuid>' argument 'bad uuid' is invalid\. a uuid is .*letters, digits, "\.", "_", ":" or "-"/,
      ],
      // A near miss: one line, the hint inside it.
      [
        ['provison'],
        /^rendezvous: unknown command 'provison' \(did you mean provision\?; see 'rendezvous --help'\)\n$/,
      ],
    ];
    const results = await Promise.all(
      cases.map(([args]) => runCli(args, { RENDEZVOUS_API: '', RENDEZVOUS_SECRET: 'JBSWY3DPEHPK3PXP' }, '')),
    );
    cases.forEach(([args, message], i) => {
      const r = results[i] as (typeof results)[number];
      const what = `rendezvous ${args.join(' ')}: ${r.stderr}`;
      expect(r.code, what).toBe(2);
      expect(r.stderr, what).toMatch(message);
      expect(r.stderr.trimEnd().split('\n'), what).toHaveLength(1);
      expect(r.stderr, what).not.toMatch(/\n\s+at /);
    });
  }, 60_000);

  it('a malformed RENDEZVOUS_SECRET is named, and not echoed, by provision --secret-env and expose', async () => {
    const env = {
      RENDEZVOUS_SECRET: 'not!base32',
      RENDEZVOUS_API: 'http://127.0.0.1:1',
      AWS_REGION: 'local',
      AWS_ENDPOINT_URL_DYNAMODB: 'http://127.0.0.1:1',
    };
    const [provision, expose] = await Promise.all([
      runCli(['provision', '--uuid', 'u', '--secret-env'], env, ''),
      runCli(['expose', '--uuid', 'u', '--to', '22'], env, ''),
    ]);
    expect(provision.code).toBe(1);
    expect(provision.stderr).toMatch(/^rendezvous: RENDEZVOUS_SECRET: the secret is not base32\n$/);
    expect(expose.code).toBe(2);
    expect(expose.stderr).toMatch(/^rendezvous: RENDEZVOUS_SECRET: not a base32 TOTP secret.*\n$/);
    for (const r of [provision, expose]) expect(r.stderr).not.toContain('not!base32');
  }, 60_000);
});
