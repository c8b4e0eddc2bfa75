/**
 * What the plain app and the pipeline app share, so neither imports the other: the stacks' names,
 * the props each stack gets from a deployment plan, and the relay bundling that must precede the
 * relay image's staging.
 */
import { execFileSync } from 'node:child_process';
import type { App } from 'aws-cdk-lib';
import { PROJECT_ROOT } from './constructs/function.js';
import type { DeploymentPlan } from './context.js';
import type { RendezvousStackProps } from './stack.js';
import type { TableStackProps } from './table-stack.js';

/** Name of the table stack. */
export const TABLE_STACK = 'Rendezvous-Table';

/** The service stack's name in `region` (the same in the plain app and the pipeline). */
export const regionStackName = (region: string): string => `Rendezvous-${region}`;

/** The table stack's props for a plan (both apps build it the same way). */
export function tableStackProps(plan: DeploymentPlan, account?: string): TableStackProps {
  return {
    env: { region: plan.home, account },
    stackName: TABLE_STACK,
    description: `rendezvous: the state table (global, home ${plan.home})`,
    tableName: plan.tableName,
    replicaRegions: plan.regions.filter((r) => r !== plan.home),
    unprotectedReplicas: plan.retiring,
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
    homeRegion: plan.claimsRegion,
    tableRegions: plan.regions,
    zone: plan.zone,
    apiDomain: plan.apiDomain,
    natGateways: plan.natGateways,
    reservedConcurrency: plan.reservedConcurrency,
    relayDirect: plan.relayDirect,
  };
}

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

/** Bundles the relay unless the context says not to (tests). */
export function bundleRelayUnlessSkipped(app: App): void {
  const skip = app.node.tryGetContext('skipRelayBuild');
  if (skip !== true && skip !== 'true') bundleRelay();
}
