/**
 * The CDK app: reads context and instantiates one stack per region. Context (cdk.json or -c):
 *   regions            comma-separated; the first owns the global table (default us-east-1)
 *   account            AWS account id (else the CLI's default account)
 *   tableName          (rendezvous)
 *   relayPort          public generic-protocol port (8899)
 *   relayDesiredCount  relay tasks per region (2)
 *   relayArchitecture  x86_64 | arm64
 *   certificateArn     ACM certificate ARN(s), comma-separated; each region uses the one in its region
 *   relayDomain        a DNS name to put in triples instead of the NLB's
 *   alarmEmail         e-mail subscribed to the alarm topic
 *   nodeImage          base image for the relay build (default: the Dockerfile's public Node 22)
 *   skipRelayBuild     true: do not run the relay bundle build before synth
 */
import { execFileSync } from 'node:child_process';
import { App, Aspects } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { PROJECT_ROOT } from './constructs/function.js';
import { RendezvousStack } from './stack.js';

/** Builds the app from its context; exported so tests synthesise exactly what `cdk synth` does. */
export function buildApp(app: App = new App()): { app: App; stacks: RendezvousStack[] } {
  const ctx = (key: string): string | undefined => {
    const v = app.node.tryGetContext(key);
    return v === undefined || v === null || v === '' ? undefined : String(v);
  };
  const regions = (ctx('regions') ?? 'us-east-1')
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean);
  if (regions.length === 0) throw new Error('context "regions" names no region');
  const architecture = ctx('relayArchitecture') ?? 'x86_64';
  if (architecture !== 'x86_64' && architecture !== 'arm64')
    throw new Error('relayArchitecture is x86_64 or arm64');
  const certificates = (ctx('certificateArn') ?? '').split(',').filter(Boolean);
  const [owner] = regions as [string];
  const stacks: RendezvousStack[] = [];
  for (const region of regions) {
    const stack = new RendezvousStack(app, `Rendezvous-${region}`, {
      env: { region, account: ctx('account') ?? process.env.CDK_DEFAULT_ACCOUNT },
      description: `rendezvous: registration API and relays (${region})`,
      tableName: ctx('tableName') ?? 'rendezvous',
      tableOwner: region === owner,
      replicaRegions: region === owner ? regions.slice(1) : [],
      relayPort: Number(ctx('relayPort') ?? 8899),
      relayDesiredCount: Number(ctx('relayDesiredCount') ?? 2),
      relayArchitecture: architecture,
      certificateArn: certificates.find((arn) => arn.split(':')[3] === region),
      relayDomain: ctx('relayDomain'),
      alarmEmail: ctx('alarmEmail'),
      nodeImage: ctx('nodeImage'),
    });
    // Replica regions use the table the owner's stack creates.
    if (stacks[0]) stack.addStackDependency(stacks[0]);
    stacks.push(stack);
  }
  Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
  return { app, stacks };
}

if (process.argv[1]?.endsWith('app.ts')) {
  const { app } = buildApp();
  // The relay image copies the bundle; build it so the image matches the source being deployed.
  if (app.node.tryGetContext('skipRelayBuild') !== 'true') {
    execFileSync(process.execPath, ['scripts/build.mjs', 'relay'], { cwd: PROJECT_ROOT, stdio: 'ignore' });
  }
  app.synth();
}
