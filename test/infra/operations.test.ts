/**
 * What breaks after the first deploy (issue 27), read from the synthesised templates the way AWS
 * reads them: the alarm topic's policy evaluated as SNS evaluates it, the relay service's task
 * count left to autoscaling, alarms that also say when they clear, the functions' reserved
 * concurrency, the API's routes for any path, and the NAT gateways per region.
 */
import { readFileSync } from 'node:fs';
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import type { RendezvousStack } from '../../infra/stack.js';
import { synthApp } from './cdk-app.js';

type Resources = Record<string, { Type: string; Properties: Record<string, unknown> }>;
const resourcesOf = (t: Template, type: string) =>
  Object.entries(t.findResources(type) as Resources).map(([id, r]) => ({ id, ...r }));

const two = synthApp({ regions: 'us-east-1,eu-west-1' });
const [home, away] = two.stacks.map((s: RendezvousStack) => Template.fromStack(s)) as [Template, Template];

/** One IAM-style statement as CloudFormation holds it. */
interface Statement {
  Effect: 'Allow' | 'Deny';
  Principal?: '*' | { AWS?: unknown; Service?: unknown };
  Action: string | string[];
  Resource?: unknown;
  Condition?: Record<string, Record<string, unknown>>;
}

/** A request as SNS sees it: who calls, what, on which topic, and the request's context keys. */
interface Request {
  principal: { service?: string; account?: string };
  action: string;
  resource: unknown;
  context: Record<string, unknown>;
}

const asList = (v: unknown): unknown[] => (Array.isArray(v) ? v : [v]);
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
const glob = (pattern: string, value: string) =>
  new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
    'i',
  ).test(value);

function principalMatches(p: Statement['Principal'], who: Request['principal']): boolean {
  if (p === '*') return true;
  if (!p) return false;
  if (who.service && asList(p.Service).some((s) => s === who.service)) return true;
  if (p.AWS === undefined) return false;
  return asList(p.AWS).some(
    (a) => a === '*' || (who.account !== undefined && JSON.stringify(a).includes(who.account)),
  );
}

/** The condition operators this project's policies use; an unknown one fails the test. */
function conditionHolds(op: string, key: string, expected: unknown, ctx: Request['context']): boolean {
  const actual = ctx[key];
  const values = asList(expected);
  switch (op) {
    case 'Bool':
      return actual !== undefined && values.some((v) => String(v) === String(actual));
    case 'StringEquals':
    case 'ArnEquals':
      return actual !== undefined && values.some((v) => same(v, actual));
    case 'ArnLike':
    case 'StringLike':
      return (
        actual !== undefined &&
        values.some((v) =>
          typeof v === 'string' && typeof actual === 'string' ? glob(v, actual) : same(v, actual),
        )
      );
    default:
      throw new Error(`condition operator ${op} not modelled`);
  }
}

function matches(s: Statement, req: Request): boolean {
  if (!principalMatches(s.Principal, req.principal)) return false;
  if (!asList(s.Action).some((a) => glob(String(a), req.action))) return false;
  if (s.Resource !== undefined && !asList(s.Resource).some((r) => r === '*' || same(r, req.resource)))
    return false;
  return Object.entries(s.Condition ?? {}).every(([op, keys]) =>
    Object.entries(keys).every(([key, v]) => conditionHolds(op, key, v, req.context)),
  );
}

/** IAM's evaluation of one resource policy: an explicit Deny wins, then an Allow, else the implicit deny. */
function evaluate(statements: Statement[], req: Request): 'Allow' | 'Deny' | 'ImplicitDeny' {
  const hit = statements.filter((s) => matches(s, req));
  if (hit.some((s) => s.Effect === 'Deny')) return 'Deny';
  return hit.some((s) => s.Effect === 'Allow') ? 'Allow' : 'ImplicitDeny';
}

describe('the alarm topic, as SNS evaluates its policy', () => {
  const topicOf = (t: Template) => {
    const [topic] = resourcesOf(t, 'AWS::SNS::Topic').filter((r) => r.id.includes('AlarmTopic'));
    if (!topic) throw new Error('no alarm topic');
    const policies = resourcesOf(t, 'AWS::SNS::TopicPolicy').filter((p) =>
      asList(p.Properties.Topics).some((x) => same(x, { Ref: topic.id })),
    );
    // A topic policy replaces SNS's default policy entirely: these statements are all there is.
    const statements = policies.flatMap(
      (p) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement,
    );
    return { ref: { Ref: topic.id }, statements };
  };
  // What CloudWatch sends when an alarm of this account fires: the service principal, over TLS,
  // with the alarm as source.
  const alarmPublish = (ref: unknown, secure: boolean): Request => ({
    principal: { service: 'cloudwatch.amazonaws.com' },
    action: 'sns:Publish',
    resource: ref,
    context: {
      'aws:SecureTransport': String(secure),
      'aws:SourceAccount': { Ref: 'AWS::AccountId' },
      'aws:SourceArn': 'arn:aws:cloudwatch:us-east-1:123456789012:alarm:rendezvous.us-east-1.Api5xx',
    },
  });

  it.each([
    ['home', home],
    ['another region', away],
  ])('lets CloudWatch alarms publish over TLS (%s)', (_, t) => {
    const { ref, statements } = topicOf(t);
    expect(evaluate(statements, alarmPublish(ref, true))).toBe('Allow');
  });

  it('denies publishing without TLS, and the Deny touches nothing else', () => {
    const { ref, statements } = topicOf(home);
    expect(evaluate(statements, alarmPublish(ref, false))).toBe('Deny');
    for (const s of statements.filter((x) => x.Effect === 'Deny'))
      expect(Object.keys(s.Condition ?? {})).toEqual(['Bool']);
    for (const s of statements.filter((x) => x.Effect === 'Deny'))
      expect(s.Condition?.Bool).toEqual({ 'aws:SecureTransport': 'false' });
  });

  it('lets no other account and no other service publish (confused deputy: the source account is ours)', () => {
    const { ref, statements } = topicOf(home);
    const other = alarmPublish(ref, true);
    expect(
      evaluate(statements, { ...other, context: { ...other.context, 'aws:SourceAccount': '999999999999' } }),
    ).not.toBe('Allow');
    expect(evaluate(statements, { ...other, principal: { service: 's3.amazonaws.com' } })).not.toBe('Allow');
    expect(evaluate(statements, { ...other, principal: { account: '999999999999' } })).not.toBe('Allow');
  });
});

describe('alarms', () => {
  it('every alarm that notifies also notifies when it clears (OK actions to the same topic)', () => {
    const alarms = resourcesOf(home, 'AWS::CloudWatch::Alarm').filter((a) => a.Properties.AlarmActions);
    expect(alarms.length).toBeGreaterThan(10);
    for (const a of alarms)
      expect({ id: a.id, ok: a.Properties.OKActions }).toEqual({ id: a.id, ok: a.Properties.AlarmActions });
  });
});

describe('relay task count', () => {
  it('the service names no DesiredCount (a release never resets what autoscaling chose); autoscaling starts at relayDesiredCount', () => {
    const [service] = resourcesOf(home, 'AWS::ECS::Service');
    expect(service?.Properties).not.toHaveProperty('DesiredCount');
    const [target] = resourcesOf(home, 'AWS::ApplicationAutoScaling::ScalableTarget');
    expect(target?.Properties.MinCapacity).toBe(2);
    const three = Template.fromStack(synthApp({ relayDesiredCount: 3 }).stacks[0] as RendezvousStack);
    expect(resourcesOf(three, 'AWS::ApplicationAutoScaling::ScalableTarget')[0]?.Properties.MinCapacity).toBe(
      3,
    );
  });
});

describe('registration functions', () => {
  const functions = resourcesOf(home, 'AWS::Lambda::Function').filter(
    (f) => f.Properties.Handler === 'index.handler',
  );

  it('each has reserved concurrency: one cannot starve the other, and neither the account', () => {
    expect(functions.length).toBe(2);
    for (const f of functions) expect(f.Properties.ReservedConcurrentExecutions).toBeGreaterThan(0);
    const none = Template.fromStack(synthApp({ reservedConcurrency: 'none' }).stacks[0] as RendezvousStack);
    for (const f of resourcesOf(none, 'AWS::Lambda::Function').filter(
      (x) => x.Properties.Handler === 'index.handler',
    ))
      expect(f.Properties).not.toHaveProperty('ReservedConcurrentExecutions');
  });
});

describe('the API answers on any path (the original reads only the query)', () => {
  const routes = resourcesOf(home, 'AWS::ApiGatewayV2::Route');
  const integrations = resourcesOf(home, 'AWS::ApiGatewayV2::Integration');
  const aliases = resourcesOf(home, 'AWS::Lambda::Alias');
  const fnOf = (routeKey: string) => {
    const route = routes.find((r) => r.Properties.RouteKey === routeKey);
    if (!route)
      throw new Error(`no route ${routeKey} (have ${routes.map((r) => r.Properties.RouteKey).join(', ')})`);
    const integrationId = JSON.stringify(route.Properties.Target).match(/"Ref":"([^"]+)"/)?.[1];
    const integration = integrations.find((i) => i.id === integrationId);
    const aliasId = JSON.stringify(integration?.Properties.IntegrationUri).match(/"Ref":"([^"]+)"/)?.[1];
    const alias = aliases.find((a) => a.id === aliasId);
    return JSON.stringify(alias?.Properties.FunctionName).match(/"Ref":"([^"]+)"/)?.[1] ?? '';
  };

  it.each([
    ['PUT /{proxy+}', 'Register'],
    ['GET /{proxy+}', 'Lookup'],
    ['ANY /{proxy+}', 'Lookup'],
    ['PUT /', 'Register'],
    ['GET /', 'Lookup'],
  ])('%s reaches %s', (key, fn) => {
    expect(fnOf(key)).toContain(fn);
  });
});

describe('NAT gateways (losing one AZ must not cut the tasks off)', () => {
  it('one per AZ by default, each private subnet routed to its own AZ’s gateway', () => {
    expect(resourcesOf(home, 'AWS::EC2::NatGateway').length).toBe(2);
    const routes = resourcesOf(home, 'AWS::EC2::Route').filter((r) => r.Properties.NatGatewayId);
    const gateways = new Set(routes.map((r) => JSON.stringify(r.Properties.NatGatewayId)));
    expect(routes.length).toBe(2);
    expect(gateways.size).toBe(2);
  });

  it('natGateways=1 is the cheap setting (one gateway, documented single-AZ egress)', () => {
    const cheap = Template.fromStack(synthApp({ natGateways: 1 }).stacks[0] as RendezvousStack);
    expect(resourcesOf(cheap, 'AWS::EC2::NatGateway').length).toBe(1);
    expect(() => synthApp({ natGateways: 3 })).toThrow(/natGateways is 1 or 2/);
  });

  it('ECR layers (S3) and DynamoDB go through free gateway endpoints, off the NAT gateways', () => {
    const endpoints = resourcesOf(home, 'AWS::EC2::VPCEndpoint').map((e) =>
      JSON.stringify(e.Properties.ServiceName),
    );
    expect(endpoints.some((s) => s.includes('dynamodb'))).toBe(true);
    expect(endpoints.some((s) => s.includes('.s3'))).toBe(true);
  });
});

describe('the relay image', () => {
  it('defaults to a Node 22 base pinned by digest, still overridable by the NODE_IMAGE build argument', () => {
    const docker = readFileSync(new URL('../../relay/Dockerfile', import.meta.url), 'utf8');
    expect(docker).toMatch(
      /^ARG NODE_IMAGE=public\.ecr\.aws\/docker\/library\/node:22[-.\w]*@sha256:[0-9a-f]{64}$/m,
    );
    expect(docker).toMatch(/^FROM \$\{NODE_IMAGE\}$/m);
  });
});

describe('removing a region (docs/deploy.md "Removing a region")', () => {
  const replicasOf = (context: Record<string, unknown>) => {
    const t = Template.fromStack(synthApp(context).table);
    const [table] = resourcesOf(t, 'AWS::DynamoDB::GlobalTable');
    if (!table) throw new Error('no global table');
    return Object.fromEntries(
      (table.Properties.Replicas as Array<{ Region: string; DeletionProtectionEnabled?: boolean }>).map(
        (r) => [r.Region, r.DeletionProtectionEnabled === true],
      ),
    );
  };
  const three = 'us-east-1,eu-west-1,ap-southeast-2';

  it('step 1: retiringRegions lifts the leaving replica’s deletion protection, and only its', () => {
    expect(replicasOf({ regions: three, deployedRegions: three, retiringRegions: 'ap-southeast-2' })).toEqual(
      {
        'us-east-1': true,
        'eu-west-1': true,
        'ap-southeast-2': false,
      },
    );
    // Its service stack is still in the app, so `cdk destroy Rendezvous-ap-southeast-2` finds it.
    const app = synthApp({ regions: three, deployedRegions: three, retiringRegions: 'ap-southeast-2' });
    expect(app.stacks.map((s: RendezvousStack) => s.stackName)).toContain('Rendezvous-ap-southeast-2');
  });

  it('step 3: the replica leaves the table once it is named retiring; without that, synth refuses with the procedure', () => {
    expect(() => synthApp({ regions: 'us-east-1,eu-west-1', deployedRegions: three })).toThrow(
      /ap-southeast-2.*deletion protection.*retiringRegions=ap-southeast-2.*cdk destroy Rendezvous-ap-southeast-2/s,
    );
    expect(
      replicasOf({
        regions: 'us-east-1,eu-west-1',
        deployedRegions: three,
        retiringRegions: 'ap-southeast-2',
      }),
    ).toEqual({ 'us-east-1': true, 'eu-west-1': true });
  });

  it('the home region cannot retire, and a retiring region must be one the table has', () => {
    expect(() => synthApp({ regions: three, deployedRegions: three, retiringRegions: 'us-east-1' })).toThrow(
      /home/,
    );
    expect(() => synthApp({ regions: three, deployedRegions: three, retiringRegions: 'ap-south-1' })).toThrow(
      /ap-south-1 is not in deployedRegions/,
    );
  });
});

describe('deploying again after `cdk destroy --all` (docs/deploy.md "Tear-down")', () => {
  it('the retained table meets what `cdk deploy --import-existing-resources` needs to adopt it', () => {
    const t = Template.fromStack(synthApp({ regions: 'us-east-1,eu-west-1' }).table).toJSON() as {
      Resources: Record<
        string,
        { Type: string; DeletionPolicy?: string; Properties: Record<string, unknown> }
      >;
    };
    const tables = Object.values(t.Resources).filter((r) => r.Type === 'AWS::DynamoDB::GlobalTable');
    expect(tables.length).toBe(1);
    const [table] = tables;
    // CloudFormation imports a named resource automatically when its name is a literal in the
    // template (the GlobalTable's primary identifier), it is retained on delete, and no stack owns it.
    expect(table?.DeletionPolicy).toBe('Retain');
    expect(typeof table?.Properties.TableName).toBe('string');
    expect(table?.Properties.TableName).toBe('rendezvous');
    // Nothing else in the stack needs the table to be new.
    expect(Object.values(t.Resources).filter((r) => r.Type !== 'AWS::CDK::Metadata').length).toBe(1);
  });
});
