/**
 * The CDK app: reads context (infra/context.ts checks it) and instantiates the table stack and
 * one service stack per region (their names and props come from infra/plan.ts, which the
 * pipeline app shares). infra/main.ts, cdk.json's entry, synthesises it. Context (cdk.json or -c):
 *   regions            comma-separated; the first is the table's home (default us-east-1)
 *   deployedRegions    the regions the deployed table has now (set after each deploy); lets synth
 *                      refuse what CloudFormation would (home moved, >1 replica changed at once)
 *   retiringRegions    regions leaving: their replicas lose deletion protection (docs/deploy.md)
 *   account            AWS account id (else the CLI's default account)
 *   tableName          (rendezvous)
 *   relayPort          public generic-protocol port (8899)
 *   relayTlsPort       generic protocol over TLS, with a certificate (8443)
 *   relayHttpPort      HTTP-specific protocol in plain TCP, without a certificate (8898)
 *   relayDesiredCount  fewest relay tasks per region (2): autoscaling's minimum
 *   relayArchitecture  x86_64 | arm64
 *   certificateArn     ACM certificate ARN(s), comma-separated; each region uses the one in its region
 *   relayDomain        each region's relay name: a template (relay.{region}.example.com) or a JSON
 *                      map region → name; required with a certificate
 *   alarmEmail         e-mail subscribed to the alarm topic
 *   nodeImage          base image for the relay build (default: the Dockerfile's public Node 22)
 *   hostedZoneId, zoneName   users' Route 53 zone (never looked up): api.<zone> as a latency record
 *                      per region, relay-<region>.<zone> and its wildcard, a certificate per region
 *   apiDomain          the one API name (default api.<zoneName>)
 *   natGateways        NAT gateways per region: 2 (one per AZ, default) or 1 (cheaper, one AZ's egress)
 *   relayDirect        true: relay tasks get public IPs and look-ups name the task holding the hidden
 *                      server (no peer hop; plain-TCP triples only; default false, docs/deploy.md)
 *   reservedConcurrency  per registration function (50), or none (accounts with a low Lambda quota)
 *   pipeline           true: infra/main.ts synthesises the CDK Pipelines app instead (infra/pipeline.ts)
 *   skipRelayBuild     true: do not bundle the relay before the image is staged (tests only)
 */
import { App, Aspects } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { planFromContext } from './context.js';
import {
  bundleRelayUnlessSkipped,
  regionStackName,
  regionStackProps,
  TABLE_STACK,
  tableStackProps,
} from './plan.js';
import { RendezvousStack } from './stack.js';
import { TableStack } from './table-stack.js';

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
