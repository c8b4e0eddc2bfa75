/**
 * The app's context, read and checked before anything is built: what CloudFormation would refuse
 * half-way through a deploy (a moved table home, several replicas changed in one update, a
 * certificate no client could verify, one relay name for every region) is refused here, at synth,
 * with the fix in the message.
 */

/** A context getter: undefined for unset or empty. */
export type ContextGetter = (key: string) => unknown;

/** Everything the stacks are built from. */
export interface DeploymentPlan {
  /** Every region of the rollout; the first is the table's home. */
  regions: string[];
  /** The table stack's region. */
  home: string;
  /**
   * Where one-time codes are claimed as deployed (`claimsRegion`, default `home`): any region of
   * `regions`, unlike the table's home. `rendezvous claims-region` moves it at run time.
   */
  claimsRegion: string;
  tableName: string;
  account?: string;
  relayPort: number;
  relayTlsPort?: number;
  relayHttpPort?: number;
  relayDesiredCount: number;
  relayArchitecture: 'x86_64' | 'arm64';
  /** Per region: the certificate in that region (if any). */
  certificates: Record<string, string | undefined>;
  /** Per region: its own relay name (if any). */
  domains: Record<string, string | undefined>;
  alarmEmail?: string;
  nodeImage?: string;
  /**
   * The Route 53 hosted zone users' names live in (`hostedZoneId` and `zoneName`). With it, each
   * region gets `apiDomain` as a latency record to its own API, its relay name (default
   * `relay-<region>.<zone>`) and a wildcard under it as aliases to its NLB, and, unless
   * `certificateArn` has one for the region, a DNS-validated certificate for all of them.
   */
  zone?: { hostedZoneId: string; zoneName: string };
  /** The one API name for users (default `api.<zoneName>`), with a zone only. */
  apiDomain?: string;
  /**
   * Regions leaving the rollout (`retiringRegions`): while still in `regions`, their replicas lose
   * deletion protection (step 1); once out of `regions`, the table drops them (step 3).
   */
  retiring: string[];
  /** NAT gateways per region: 2 (one per AZ, the default) or 1 (cheaper; one AZ's loss cuts egress). */
  natGateways: 1 | 2;
  /** Reserved concurrency of each registration function; undefined: none reserved. */
  reservedConcurrency?: number;
  /**
   * Direct addressing (`relayDirect`, default off): relay tasks get public IPv4s and look-ups name
   * the task holding the hidden server, so mobile clients pair there without a peer hop.
   */
  relayDirect: boolean;
}

const REGION = /^[a-z]{2}(-[a-z]+)+-\d$/;

/**
 * Reserved concurrency per registration function unless `reservedConcurrency` says otherwise:
 * far above what the stage throttle lets through (100 rps at tens of milliseconds each), and two
 * of them leave 900 of the default regional quota of 1,000 unreserved. Accounts with a lower quota
 * (new accounts may start with 10) must set `none`: Lambda keeps 100 unreserved.
 */
export const DEFAULT_RESERVED_CONCURRENCY = 50;

const list = (v: unknown): string[] =>
  v === undefined
    ? []
    : (Array.isArray(v) ? v.map(String) : String(v).split(',')).map((x) => x.trim()).filter(Boolean);

function port(v: unknown, name: string, fallback?: number): number | undefined {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new Error(`context ${name}: not a TCP port: ${String(v)}`);
  return n;
}

/**
 * Checks a change of the global table's regions against what CloudFormation accepts: the home
 * region (the table stack's) stays first, and one update adds or removes at most one replica.
 * `deployed` is what the table has now (context `deployedRegions`); absent, this is a first deploy,
 * which may create any number of replicas at once.
 */
export function checkRegionChange(regions: string[], deployed: string[]): void {
  if (deployed.length === 0) return;
  const [home] = deployed as [string];
  if (regions[0] !== home)
    throw new Error(
      `regions must start with ${home}: the table stack lives there (deployedRegions=${deployed.join(',')}). ` +
        'CloudFormation cannot move a global table to another stack; keep ' +
        `${home} first (the order of the other regions does not matter).`,
    );
  const added = regions.filter((r) => !deployed.includes(r));
  const removed = deployed.filter((r) => !regions.includes(r));
  if (added.length + removed.length > 1) {
    const next = added[0] ? [...deployed, added[0]] : deployed.filter((r) => r !== removed[0]);
    throw new Error(
      `regions changes ${added.length + removed.length} replicas at once (adds ${added.join(',') || 'none'}, ` +
        `removes ${removed.join(',') || 'none'}); CloudFormation adds or removes one global-table replica per ` +
        `update. Deploy one step at a time: first -c regions=${next.join(',')} -c deployedRegions=${deployed.join(',')}, ` +
        `then set deployedRegions=${next.join(',')} and go on.`,
    );
  }
}

/**
 * Checks a region's removal against what CloudFormation accepts. Every replica has deletion
 * protection, so removing one fails unless an earlier deploy lifted it: a region leaves in three
 * steps, (1) named in `retiringRegions` while still in `regions` (its replica's protection off),
 * (2) its service stack destroyed (no deploy deletes a stack that left the app), (3) dropped from
 * `regions`, still named retiring (the table update removes the replica).
 */
export function checkRetirement(regions: string[], deployed: string[], retiring: string[]): void {
  for (const r of retiring) {
    if (r === (deployed[0] ?? regions[0]))
      throw new Error(
        `retiringRegions names ${r}, the table's home: the table stack lives there and cannot move (see checkRegionChange).`,
      );
    if (deployed.length > 0 && !deployed.includes(r))
      throw new Error(
        `retiringRegions names ${r}, but ${r} is not in deployedRegions (${deployed.join(',')}).`,
      );
  }
  const removed = deployed.filter((r) => !regions.includes(r) && !retiring.includes(r));
  if (removed.length > 0) {
    const [r] = removed as [string];
    throw new Error(
      `regions drops ${r}, whose replica has deletion protection: CloudFormation would refuse to remove it. ` +
        `Remove a region in three steps: (1) deploy with ${r} still in regions and -c retiringRegions=${r} ` +
        `(lifts its replica's deletion protection); (2) npx cdk destroy Rendezvous-${r} -c regions=${deployed.join(',')} ` +
        `-c retiringRegions=${r} (no deploy deletes a stack that left the app); (3) deploy -c regions=${regions.join(',')} ` +
        `-c deployedRegions=${deployed.join(',')} -c retiringRegions=${r}, then set deployedRegions=${regions.join(',')} ` +
        'and drop retiringRegions.',
    );
  }
}

/** This region's relay name from `relayDomain`: a template with `{region}`, or a region → name map. */
function domainsOf(v: unknown, regions: string[]): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  if (v === undefined) return out;
  let map: Record<string, unknown> | undefined;
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) map = v as Record<string, unknown>;
  else if (typeof v === 'string' && v.trim().startsWith('{"')) map = JSON.parse(v) as Record<string, unknown>;
  for (const region of regions) {
    const name = map ? map[region] : String(v).replaceAll('{region}', region);
    out[region] = name === undefined || name === '' ? undefined : String(name);
  }
  const named = regions.filter((r) => out[r]);
  const unique = new Set(named.map((r) => out[r]));
  if (unique.size < named.length)
    throw new Error(
      `relayDomain gives several regions the same name (${[...unique].join(', ')}); each region needs its own ` +
        '(a registration names the relay of the region that answered it). Use a template such as ' +
        '-c relayDomain=relay.{region}.example.com, or a map {"us-east-1":"relay-use1.example.com",…}.',
    );
  return out;
}

/** Reads and checks the context. Throws an Error whose message says what to change. */
export function planFromContext(get: ContextGetter): DeploymentPlan {
  const ctx = (key: string): unknown => {
    const v = get(key);
    return v === undefined || v === null || v === '' ? undefined : v;
  };
  const regions = list(ctx('regions') ?? 'us-east-1');
  if (regions.length === 0) throw new Error('context "regions" names no region');
  for (const r of regions) if (!REGION.test(r)) throw new Error(`context regions: not a region name: ${r}`);
  if (new Set(regions).size !== regions.length)
    throw new Error(`context regions names a region twice: ${regions}`);
  checkRegionChange(regions, list(ctx('deployedRegions')));
  const retiring = list(ctx('retiringRegions'));
  checkRetirement(regions, list(ctx('deployedRegions')), retiring);
  const architecture = String(ctx('relayArchitecture') ?? 'x86_64');
  if (architecture !== 'x86_64' && architecture !== 'arm64')
    throw new Error('relayArchitecture is x86_64 or arm64');
  const certificateArns = list(ctx('certificateArn'));
  const certificates: Record<string, string | undefined> = {};
  for (const region of regions)
    certificates[region] = certificateArns.find((arn) => arn.split(':')[3] === region);
  const zone = zoneOf(ctx('hostedZoneId'), ctx('zoneName'));
  const domains = domainsOf(
    ctx('relayDomain') ?? (zone ? `relay-{region}.${zone.zoneName}` : undefined),
    regions,
  );
  const apiDomain = zone ? String(ctx('apiDomain') ?? `api.${zone.zoneName}`).toLowerCase() : undefined;
  if (zone) {
    const inZone = (name: string) => name === zone.zoneName || name.endsWith(`.${zone.zoneName}`);
    if (apiDomain && !inZone(apiDomain))
      throw new Error(
        `apiDomain ${apiDomain} is not in the hosted zone ${zone.zoneName}; name one inside it.`,
      );
    for (const region of regions)
      if (!certificates[region] && !inZone(domains[region] as string))
        throw new Error(
          `relayDomain for ${region} (${domains[region]}) is outside the hosted zone ${zone.zoneName}: the certificate ` +
            `made for ${region} is validated in that zone. Name relays inside it (the default is relay-{region}.${zone.zoneName}), ` +
            `or give -c certificateArn=… for ${region}.`,
        );
  }
  for (const region of regions)
    if (certificates[region] && !domains[region])
      throw new Error(
        `certificateArn for ${region} needs a relay domain for ${region}: TLS clients check the certificate's name, ` +
          "and the NLB's own name is not on it. Add -c relayDomain=relay.{region}.example.com (the certificate " +
          'must name relay.<region>.example.com and *.relay.<region>.example.com), then point that name at the ' +
          "stack's NlbDnsName output.",
      );
  const claimsRegion = String(ctx('claimsRegion') ?? regions[0]).trim();
  if (!regions.includes(claimsRegion))
    throw new Error(
      `claimsRegion ${claimsRegion} has no replica of the table; name one of ${regions.join(', ')}`,
    );
  const nat = Number(ctx('natGateways') ?? 2);
  if (nat !== 1 && nat !== 2)
    throw new Error(
      `natGateways is 1 or 2, not ${String(ctx('natGateways'))}: 2 keeps one per AZ (losing an AZ leaves the other's egress), 1 saves one gateway`,
    );
  const reserved = ctx('reservedConcurrency') ?? DEFAULT_RESERVED_CONCURRENCY;
  const reservedConcurrency = reserved === 'none' ? undefined : Number(reserved);
  if (
    reservedConcurrency !== undefined &&
    (!Number.isInteger(reservedConcurrency) || reservedConcurrency < 1)
  )
    throw new Error(
      `reservedConcurrency is a whole number ≥ 1, or none (the account's shared pool), not ${String(reserved)}`,
    );
  const relayDirect = onOff(ctx('relayDirect'), 'relayDirect');
  const certified = regions.find((r) => certificates[r]);
  if (relayDirect && certified)
    throw new Error(
      `relayDirect applies to plain-TCP triples, and with a certificate (${certified}) every triple is TLS, naming the ` +
        'relay domain that only the NLB has a certificate for: a task address cannot serve it. Drop -c relayDirect or the certificate.',
    );
  const count = Number(ctx('relayDesiredCount') ?? 2);
  if (!Number.isInteger(count) || count < 1) throw new Error('relayDesiredCount is a whole number ≥ 1');
  return {
    regions,
    home: regions[0] as string,
    claimsRegion,
    tableName: String(ctx('tableName') ?? 'rendezvous'),
    account: ctx('account') === undefined ? undefined : String(ctx('account')),
    relayPort: port(ctx('relayPort'), 'relayPort', 8899) as number,
    relayTlsPort: port(ctx('relayTlsPort'), 'relayTlsPort'),
    relayHttpPort: port(ctx('relayHttpPort'), 'relayHttpPort'),
    relayDesiredCount: count,
    relayArchitecture: architecture,
    certificates,
    domains,
    alarmEmail: ctx('alarmEmail') === undefined ? undefined : String(ctx('alarmEmail')),
    nodeImage: ctx('nodeImage') === undefined ? undefined : String(ctx('nodeImage')),
    zone,
    apiDomain,
    natGateways: nat,
    reservedConcurrency,
    retiring,
    relayDirect,
  };
}

/** A boolean context value: true/false (or unset: false). */
function onOff(v: unknown, name: string): boolean {
  if (v === undefined || v === false || v === 'false') return false;
  if (v === true || v === 'true') return true;
  throw new Error(`${name} is true or false, not ${String(v)}`);
}

/** The hosted zone from `hostedZoneId` and `zoneName`: both or neither. */
function zoneOf(id: unknown, name: unknown): DeploymentPlan['zone'] {
  if (id === undefined && name === undefined) return undefined;
  if (id === undefined || name === undefined)
    throw new Error(
      'a hosted zone needs both -c hostedZoneId=Z… and -c zoneName=example.com (the zone is not looked up, so synth stays offline)',
    );
  const zoneName = String(name).toLowerCase().replace(/\.$/, '');
  if (!/^[A-Z0-9]+$/.test(String(id))) throw new Error(`hostedZoneId: not a Route 53 zone id: ${String(id)}`);
  return { hostedZoneId: String(id), zoneName };
}
