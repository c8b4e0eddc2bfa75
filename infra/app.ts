/**
 * The CDK app: reads context (infra/context.ts checks it) and instantiates the table stack and
 * one service stack per region. Context (cdk.json or -c):
 *   regions            comma-separated; the first is the table's home (default us-east-1)
 *   deployedRegions    the regions the deployed table has now (set after each deploy); lets synth
 *                      refuse what CloudFormation would (home moved, >1 replica changed at once)
 *   account            AWS account id (else the CLI's default account)
 *   tableName          (rendezvous)
 *   relayPort          public generic-protocol port (8899)
 *   relayTlsPort       generic protocol over TLS, with a certificate (8443)
 *   relayHttpPort      HTTP-specific protocol in plain TCP, without a certificate (8898)
 *   relayDesiredCount  relay tasks per region (2)
 *   relayArchitecture  x86_64 | arm64
 *   certificateArn     ACM certificate ARN(s), comma-separated; each region uses the one in its region
 *   relayDomain        each region's relay name: a template (relay.{region}.example.com) or a JSON
 *                      map region → name; required with a certificate
 *   alarmEmail         e-mail subscribed to the alarm topic
 *   nodeImage          base image for the relay build (default: the Dockerfile's public Node 22)
 *   skipRelayBuild     true: do not bundle the relay before the image is staged (tests only)
 */
import { execFileSync } from 'node:child_process';
import { App, Aspects } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { PROJECT_ROOT } from './constructs/function.js';
import { planFromContext } from './context.js';
import { RendezvousStack } from './stack.js';
import { TableStack } from './table-stack.js';

/** Name of the table stack. */
export const TABLE_STACK = 'Rendezvous-Table';

/**
 * Bundles the relay into dist/relay.mjs. It must run before the relay's Docker asset is created:
 * creating it stages (copies and hashes) the build context, so a bundle made later would miss the
 * image (on a fresh clone the build fails; elsewhere the image keeps the old code, same hash).
 */
export function bundleRelay(): void {
  try {
    execFileSync(process.execPath, ['scripts/build.mjs', 'relay'], { cwd: PROJECT_ROOT, stdio: 'pipe' });
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '').trim();
    throw new Error(
      `bundling the relay (node scripts/build.mjs relay) failed, so no image can be staged:\n${stderr}`,
    );
  }
}

/** Builds the app from its context; exported so tests synthesise exactly what `cdk synth` does. */
export function buildApp(app: App = new App()): { app: App; table: TableStack; stacks: RendezvousStack[] } {
  const plan = planFromContext((key) => app.node.tryGetContext(key));
  const skip = app.node.tryGetContext('skipRelayBuild');
  if (skip !== true && skip !== 'true') bundleRelay();
  const account = plan.account ?? process.env.CDK_DEFAULT_ACCOUNT;
  const table = new TableStack(app, TABLE_STACK, {
    env: { region: plan.home, account },
    description: `rendezvous: the state table (global, home ${plan.home})`,
    tableName: plan.tableName,
    replicaRegions: plan.regions.filter((r) => r !== plan.home),
  });
  const stacks = plan.regions.map((region) => {
    const stack = new RendezvousStack(app, `Rendezvous-${region}`, {
      env: { region, account },
      description: `rendezvous: registration API and relays (${region})`,
      tableName: plan.tableName,
      relayPort: plan.relayPort,
      relayTlsPort: plan.relayTlsPort,
      relayHttpPort: plan.relayHttpPort,
      relayDesiredCount: plan.relayDesiredCount,
      relayArchitecture: plan.relayArchitecture,
      certificateArn: plan.certificates[region],
      relayDomain: plan.domains[region],
      alarmEmail: plan.alarmEmail,
      nodeImage: plan.nodeImage,
    });
    // The region's replica must exist first; service stacks do not depend on each other.
    stack.addStackDependency(table);
    return stack;
  });
  Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
  return { app, table, stacks };
}

if (process.argv[1]?.endsWith('app.ts')) buildApp().app.synth();
