/**
 * The claims region in the templates (issue 27, item 8): `-c claimsRegion=<region>` chooses where
 * codes are claimed as deployed, apart from the table's home (which CloudFormation cannot move),
 * and every region may use every replica, so `rendezvous claims-region` moves the claims at run
 * time with no redeploy.
 */
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { planFromContext } from '../../infra/context.js';
import type { RendezvousStack } from '../../infra/stack.js';
import { synthApp } from './cdk-app.js';

const REGIONS = ['us-east-1', 'us-east-2', 'us-west-2'];

const resourcesOf = (t: Template, type: string) =>
  Object.entries(t.findResources(type)).map(([id, r]) => ({
    id,
    ...(r as { Properties: Record<string, unknown> }),
  }));

/** Every region a policy's DynamoDB statements name, per grantee (Register, Lookup, Relay). */
function dynamoRegions(t: Template, grantee: RegExp): string[] {
  const statements = resourcesOf(t, 'AWS::IAM::Policy')
    .filter((p) => grantee.test(p.id))
    .flatMap(
      (p) =>
        (p.Properties.PolicyDocument as { Statement: Array<{ Action: unknown; Resource: unknown }> })
          .Statement,
    )
    .filter((s) => JSON.stringify(s.Action).includes('dynamodb:'));
  for (const s of statements) expect(JSON.stringify(s.Action)).not.toContain('*');
  return [
    ...new Set(
      [...JSON.stringify(statements.map((s) => s.Resource)).matchAll(/:dynamodb:([a-z0-9-]+):/g)].map(
        (m) => m[1],
      ),
    ),
  ].sort() as string[];
}

/** RENDEZVOUS_HOME_REGION (the claims region as deployed) of the functions and the relay. */
function claimsEnv(t: Template): unknown[] {
  const fns = resourcesOf(t, 'AWS::Lambda::Function')
    .filter((f) => f.Properties.Handler === 'index.handler')
    .map(
      (f) =>
        (f.Properties.Environment as { Variables: Record<string, unknown> }).Variables.RENDEZVOUS_HOME_REGION,
    );
  const tasks = resourcesOf(t, 'AWS::ECS::TaskDefinition').map(
    (task) =>
      (
        task.Properties.ContainerDefinitions as Array<{
          Environment: Array<{ Name: string; Value: unknown }>;
        }>
      )[0]?.Environment.find((e) => e.Name === 'RENDEZVOUS_HOME_REGION')?.Value,
  );
  return [...fns, ...tasks];
}

describe('claimsRegion (context)', () => {
  const plan = (ctx: Record<string, unknown>) => planFromContext((k) => ctx[k]);

  it("defaults to the table's home; may name any region of the rollout, even on an existing table", () => {
    expect(plan({ regions: REGIONS.join(',') }).claimsRegion).toBe('us-east-1');
    const moved = plan({
      regions: REGIONS.join(','),
      deployedRegions: REGIONS.join(','),
      claimsRegion: 'us-east-2',
    });
    expect(moved.claimsRegion).toBe('us-east-2');
    // The table stays where CloudFormation has it.
    expect(moved.home).toBe('us-east-1');
  });

  it('refuses a claims region without a replica, saying which regions have one', () => {
    expect(() => plan({ regions: REGIONS.join(','), claimsRegion: 'eu-west-1' })).toThrow(
      /claimsRegion eu-west-1 .*us-east-1, us-east-2, us-west-2/,
    );
  });
});

describe('three regions with -c claimsRegion=us-east-2', () => {
  const app = synthApp({ regions: REGIONS.join(','), claimsRegion: 'us-east-2' });
  const templates = app.stacks.map((s) => ({
    region: (s as RendezvousStack).region,
    t: Template.fromStack(s as RendezvousStack),
  }));

  it('every function and relay claims in us-east-2 as deployed', () => {
    for (const { t } of templates) expect(claimsEnv(t)).toEqual(['us-east-2', 'us-east-2', 'us-east-2']);
  });

  it('every region may claim on every replica (exact actions), so a move needs no redeploy', () => {
    for (const { region, t } of templates) {
      expect(dynamoRegions(t, /Register/)).toEqual([...REGIONS].sort());
      // Look-ups claim nothing: they read this region's replica only.
      expect(dynamoRegions(t, /Lookup/)).toEqual([region]);
      expect(dynamoRegions(t, /Relay/)).toEqual([...REGIONS].sort());
    }
  });

  it("leaves the table in the home's stack", () => {
    const table = Template.fromStack(app.table);
    expect(app.table.region).toBe('us-east-1');
    const [global] = resourcesOf(table, 'AWS::DynamoDB::GlobalTable');
    const replicas = (global?.Properties.Replicas ?? []) as Array<{ Region: string }>;
    expect(replicas.map((r) => r.Region).sort()).toEqual([...REGIONS].sort());
  });
});
