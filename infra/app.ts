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
 *   hostedZoneId, zoneName   users' Route 53 zone (never looked up): api.<zone> as a latency record
 *                      per region, relay-<region>.<zone> and its wildcard, a certificate per region
 *   apiDomain          the one API name (default api.<zoneName>)
 *   pipeline           true: synthesise the CDK Pipelines app instead (infra/pipeline.ts)
 *   skipRelayBuild     true: do not bundle the relay before the image is staged (tests only)
 */
import { execFileSync } from 'node:child_process';
import { App, Aspects } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { PROJECT_ROOT } from './constructs/function.js';
import { type DeploymentPlan, planFromContext } from './context.js';
import { RendezvousStack, type RendezvousStackProps } from './stack.js';
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

/** The service stack's name in `region` (the same in the plain app and the pipeline). */
export const regionStackName = (region: string): string => `Rendezvous-${region}`;

/** The table stack's props for a plan (both apps build it the same way). */
export function tableStackProps(plan: DeploymentPlan, account?: string) {
  return {
    env: { region: plan.home, account },
    stackName: TABLE_STACK,
    description: `rendezvous: the state table (global, home ${plan.home})`,
    tableName: plan.tableName,
    replicaRegions: plan.regions.filter((r) => r !== plan.home),
  };
}

/** A region's service-stack props for a plan (both apps build it the same way). */
export function regionStackProps(
  plan: DeploymentPlan,
  region: string,
  account?: string,
): RendezvousStackProps {
  return {
    env: { region, account },
    stackName: regionStackName(region),
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
    homeRegion: plan.home,
    zone: plan.zone,
    apiDomain: plan.apiDomain,
  };
}

/** Bundles the relay unless the context says not to (tests). */
export function bundleRelayUnlessSkipped(app: App): void {
  const skip = app.node.tryGetContext('skipRelayBuild');
  if (skip !== true && skip !== 'true') bundleRelay();
}

/** Builds the app from its context; exported so tests synthesise exactly what `cdk synth` does. */
export function buildApp(app: App = new App()): { app: App; table: TableStack; stacks: RendezvousStack[] } {
  const plan = planFromContext((key) => app.node.tryGetContext(key));
  bundleRelayUnlessSkipped(app);
  const account = plan.account ?? process.env.CDK_DEFAULT_ACCOUNT;
  const table = new TableStack(app, TABLE_STACK, tableStackProps(plan, account));
  const stacks = plan.regions.map((region) => {
    const stack = new RendezvousStack(app, regionStackName(region), regionStackProps(plan, region, account));
    // The region's replica must exist first; service stacks do not depend on each other.
    stack.addStackDependency(table);
    return stack;
  });
  Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
  return { app, table, stacks };
}

if (process.argv[1]?.endsWith('app.ts')) {
  const app = new App();
  const pipeline = app.node.tryGetContext('pipeline');
  // A context mistake (a missing account, source or region plan) is the operator's to fix: say it
  // in one line, not as a stack trace under the CDK's own error.
  const refuse = (err: unknown) => {
    process.stderr.write(`rendezvous: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  };
  if (pipeline === true || pipeline === 'true') {
    // Loaded only here, and without a top-level await: pipeline.ts imports this module, which
    // must have finished evaluating first.
    void import('./pipeline.js')
      .then(({ buildPipelineApp }) => buildPipelineApp(app).app.synth())
      .catch(refuse);
  } else {
    try {
      buildApp(app).app.synth();
    } catch (err) {
      refuse(err);
    }
  }
}
