/**
 * `rendezvous claims-region` refuses what cannot be a move, in one line: no regions named
 * (exit 2), a malformed --endpoint (exit 2), a target without a replica or a target replica that
 * cannot be reached (exit 1, nothing claimed moved). The move itself: test/functions/claims-failover.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { closedPort } from '../support/net.js';

describe('rendezvous claims-region', () => {
  it('refuses what cannot be a move, in one line', async () => {
    const dead = `http://127.0.0.1:${await closedPort()}`;
    const env = {
      RENDEZVOUS_REGIONS: '',
      RENDEZVOUS_TABLE: 't',
      AWS_ACCESS_KEY_ID: 'x',
      AWS_SECRET_ACCESS_KEY: 'x',
    };
    const cases: Array<[string[], number, RegExp]> = [
      [
        ['claims-region', 'us-east-2'],
        2,
        /name every region of the table with --regions \(or RENDEZVOUS_REGIONS\)/,
      ],
      [
        ['claims-region', 'us-east-2', '--regions', 'us-east-1,us-east-2', '--endpoint', 'nowhere'],
        2,
        /claims-region: option '--endpoint <region=url>' argument 'nowhere' is invalid/,
      ],
      [
        ['claims-region', 'eu-west-1', '--regions', 'us-east-1,us-east-2'],
        1,
        /eu-west-1 is not one of the table's regions \(us-east-1, us-east-2\)/,
      ],
      [
        [
          'claims-region',
          'us-east-2',
          '--regions',
          'us-east-1,us-east-2',
          '--endpoint',
          `us-east-1=${dead}`,
          '--endpoint',
          `us-east-2=${dead}`,
        ],
        1,
        /the claims region was not moved: us-east-2's replica did not take the record/,
      ],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args, env, '')));
    cases.forEach(([args, code, message], i) => {
      const r = results[i] as (typeof results)[number];
      const what = `rendezvous ${args.join(' ')}: ${r.stderr}`;
      expect(r.code, what).toBe(code);
      expect(r.stderr, what).toMatch(message);
      expect(r.stderr.trimEnd().split('\n'), what).toHaveLength(1);
      expect(r.stdout.toString(), what).toBe('');
    });
  }, 90_000);
});
