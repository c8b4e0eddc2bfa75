/**
 * `rendezvous claims-region <region>`: the claims-region failover, one command. Writes the
 * claims-region record on every replica of the table it reaches; every region's functions and
 * relays then claim one-time codes on `<region>`'s replica within CLAIMS_REFRESH_MS. Run it when
 * the claims region (by default the table's home) is down, and again to move back.
 */
import { type Command, InvalidArgumentError } from 'commander';
import { CLAIMS_REFRESH_MS, moveClaimsRegion } from '../server/claims.js';
import { DEFAULT_TABLE } from '../server/config.js';
import { Store } from '../server/store/index.js';
import { UsageError } from './program.js';

/** `--endpoint region=url`, repeatable: a replica reached elsewhere than AWS's own endpoint. */
function endpointOption(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const i = value.indexOf('=');
  if (i < 1 || !/^https?:\/\//.test(value.slice(i + 1)))
    throw new InvalidArgumentError('region=http(s)://host:port is required');
  return { ...previous, [value.slice(0, i)]: value.slice(i + 1) };
}

/** Adds the `claims-region` command. */
export function addClaimsRegionCommand(program: Command, fail: (message: string) => never): void {
  program
    .command('claims-region')
    .description(
      "move where every region claims one-time codes (failover when that region is down; default: the table's home)",
    )
    .argument('<region>', 'the region whose replica takes the claims from now on')
    .option('--regions <list>', 'every region of the table, comma-separated (default: RENDEZVOUS_REGIONS)')
    .option('--table <name>', 'table (default: RENDEZVOUS_TABLE or rendezvous)')
    .option('--endpoint <region=url>', "a replica's endpoint other than AWS's (repeatable)", endpointOption)
    .action(
      async (to: string, o: { regions?: string; table?: string; endpoint?: Record<string, string> }) => {
        const regions = (o.regions ?? process.env.RENDEZVOUS_REGIONS ?? '')
          .split(',')
          .map((r) => r.trim())
          .filter(Boolean);
        if (regions.length === 0)
          throw new UsageError(
            'claims-region: name every region of the table with --regions (or RENDEZVOUS_REGIONS)',
          );
        const table = o.table ?? process.env.RENDEZVOUS_TABLE ?? DEFAULT_TABLE;
        const stores: Store[] = [];
        const storeFor = (region: string) => {
          const store = new Store({ table, region, endpoint: o.endpoint?.[region] });
          stores.push(store);
          return store;
        };
        try {
          const move = await moveClaimsRegion(to, regions, storeFor);
          const lines = [`claims region: ${move.region} (record written on ${move.written.join(', ')})`];
          for (const f of move.failed)
            lines.push(
              `${f.region}: not reached (${f.reason}); it takes the record by replication when it is back`,
            );
          lines.push(`every region claims on ${move.region}'s replica within ${CLAIMS_REFRESH_MS / 1000} s`);
          process.stdout.write(`${lines.join('\n')}\n`);
        } catch (err) {
          fail((err as Error).message);
        } finally {
          for (const s of stores) s.close();
        }
      },
    );
}
