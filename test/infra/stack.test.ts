/**
 * The synthesised CloudFormation, asserted by property: what an operator relies on and what a
 * reviewer would check. Bundling is skipped here (the synth test below runs the real thing).
 */
import { readFileSync } from 'node:fs';
import { App } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { buildApp } from '../../infra/app.js';
import type { RendezvousStack } from '../../infra/stack.js';

const CERT = 'arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555';

function synth(context: Record<string, unknown>): RendezvousStack[] {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [], ...context } });
  return buildApp(app).stacks;
}

const [primary, replica] = synth({ regions: 'us-east-1,eu-west-1', certificateArn: CERT });
const owner = Template.fromStack(primary as RendezvousStack);
const other = Template.fromStack(replica as RendezvousStack);
const [single] = synth({});
const alone = Template.fromStack(single as RendezvousStack);

type Resources = Record<string, { Type: string; Properties: Record<string, unknown> }>;
const resourcesOf = (t: Template, type: string) =>
  Object.entries(t.findResources(type) as Resources).map(([id, r]) => ({ id, ...r }));

describe('state table', () => {
  it('is a global table with pk/sk, TTL on expiresAt, PITR, deletion protection, retained, replicated', () => {
    owner.hasResource('AWS::DynamoDB::GlobalTable', {
      DeletionPolicy: 'Retain',
      Properties: Match.objectLike({
        TableName: 'rendezvous',
        BillingMode: 'PAY_PER_REQUEST',
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
        TimeToLiveSpecification: { AttributeName: 'expiresAt', Enabled: true },
        Replicas: Match.anyValue(),
      }),
    });
  });

  it('has a replica in every region of the rollout, each with PITR and deletion protection', () => {
    const [table] = resourcesOf(owner, 'AWS::DynamoDB::GlobalTable');
    const replicas = table?.Properties.Replicas as Array<Record<string, unknown>>;
    expect(replicas.map((r) => r.Region).sort()).toEqual(['eu-west-1', 'us-east-1']);
    for (const r of replicas) {
      expect(r.DeletionProtectionEnabled).toBe(true);
      expect(r.PointInTimeRecoverySpecification).toEqual({ PointInTimeRecoveryEnabled: true });
    }
  });

  it('is owned by the first region only; the others use their replica', () => {
    expect(Object.keys(other.findResources('AWS::DynamoDB::GlobalTable'))).toEqual([]);
    expect((replica as RendezvousStack).dependencies.map((s) => s.stackName)).toContain(
      'Rendezvous-us-east-1',
    );
  });
});

describe('registration API', () => {
  const functions = resourcesOf(owner, 'AWS::Lambda::Function').filter(
    (f) => (f.Properties.Handler as string) === 'index.handler',
  );
  const fnId = (part: string) => functions.find((f) => f.id.includes(part))?.id as string;

  it('routes PUT / to register and GET / to lookup (and any other method to lookup, for its 405)', () => {
    const routes = resourcesOf(owner, 'AWS::ApiGatewayV2::Route');
    const integrations = resourcesOf(owner, 'AWS::ApiGatewayV2::Integration');
    const targetFn = (routeKey: string) => {
      const route = routes.find((r) => r.Properties.RouteKey === routeKey);
      const integrationId = JSON.stringify(route?.Properties.Target).match(/"Ref":"([^"]+)"/)?.[1];
      const integration = integrations.find((i) => i.id === integrationId);
      return JSON.stringify(integration?.Properties.IntegrationUri).match(
        /"([A-Za-z0-9]+Function[A-Za-z0-9]+)"/,
      )?.[1];
    };
    expect(targetFn('PUT /')).toBe(fnId('Register'));
    expect(targetFn('GET /')).toBe(fnId('Lookup'));
    expect(targetFn('ANY /')).toBe(fnId('Lookup'));
  });

  it('runs both handlers on Node 22, arm64, with the table and relay address in the environment', () => {
    expect(functions.length).toBe(2);
    for (const f of functions) {
      expect(f.Properties.Runtime).toBe('nodejs22.x');
      expect(f.Properties.Architectures).toEqual(['arm64']);
    }
    owner.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({
          RENDEZVOUS_TABLE: 'rendezvous',
          RELAY_PUBLIC_PORT: '8899',
          RELAY_PUBLIC_HOST: { 'Fn::GetAtt': [Match.stringLikeRegexp('RelayNlb'), 'DNSName'] },
        }),
      },
    });
  });

  it('throttles the stage and writes access logs without query strings', () => {
    const [stage] = resourcesOf(owner, 'AWS::ApiGatewayV2::Stage');
    const props = stage?.Properties as {
      DefaultRouteSettings: { ThrottlingRateLimit: number; ThrottlingBurstLimit: number };
      AccessLogSettings: { Format: string; DestinationArn: unknown };
    };
    expect(props.DefaultRouteSettings.ThrottlingRateLimit).toBeGreaterThan(0);
    expect(props.DefaultRouteSettings.ThrottlingBurstLimit).toBeGreaterThan(0);
    expect(props.AccessLogSettings.DestinationArn).toBeDefined();
    expect(props.AccessLogSettings.Format).not.toMatch(/querystring|response=/i);
  });
});

describe('IAM', () => {
  const statements = resourcesOf(owner, 'AWS::IAM::Policy').flatMap((p) =>
    (
      (p.Properties.PolicyDocument as { Statement: Array<{ Action: string | string[]; Resource: unknown }> })
        .Statement ?? []
    ).map((s) => ({
      policy: p.id,
      actions: ([] as string[]).concat(s.Action),
      resource: JSON.stringify(s.Resource),
    })),
  );
  const dynamo = statements.filter((s) => s.actions.some((a) => a.startsWith('dynamodb:')));

  it('never grants a wildcard action on data, and scopes every table statement to the table', () => {
    expect(dynamo.length).toBeGreaterThanOrEqual(3);
    for (const s of dynamo) {
      expect(s.actions.every((a) => !a.includes('*'))).toBe(true);
      expect(s.resource).toContain(':table/rendezvous');
    }
  });

  it('lets lookup only read, register read and write single items, the relay also query and delete its parks', () => {
    const of = (part: string) =>
      dynamo
        .filter((s) => s.policy.includes(part))
        .flatMap((s) => s.actions)
        .sort();
    expect(of('Lookup')).toEqual(['dynamodb:GetItem']);
    expect(of('Register')).toEqual(['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem']);
    expect(of('Relay')).toEqual([
      'dynamodb:DeleteItem',
      'dynamodb:GetItem',
      'dynamodb:PutItem',
      'dynamodb:Query',
      'dynamodb:UpdateItem',
    ]);
  });
});

describe('relay service', () => {
  it('listens on TCP 8899 for the generic protocol and, with a certificate, TLS 443 for HTTP', () => {
    owner.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', { Port: 8899, Protocol: 'TCP' });
    owner.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', {
      Port: 443,
      Protocol: 'TLS',
      Certificates: [{ CertificateArn: CERT }],
      SslPolicy: Match.stringLikeRegexp('TLS13'),
    });
    const listeners = resourcesOf(alone, 'AWS::ElasticLoadBalancingV2::Listener');
    expect(listeners.map((l) => l.Properties.Port)).not.toContain(443);
    // The certificate is regional: eu-west-1 got none, so it has no TLS listener either.
    expect(resourcesOf(other, 'AWS::ElasticLoadBalancingV2::Listener').map((l) => l.Properties.Port)).toEqual(
      [8899],
    );
  });

  it('health-checks /healthz and drains: deregistration delay < drain grace < stopTimeout ≤ 120 s', () => {
    const groups = resourcesOf(owner, 'AWS::ElasticLoadBalancingV2::TargetGroup');
    expect(groups.length).toBeGreaterThan(0);
    for (const g of groups) {
      expect(g.Properties).toMatchObject({
        HealthCheckPath: '/healthz',
        HealthCheckPort: '8896',
        HealthCheckProtocol: 'HTTP',
        TargetType: 'ip',
      });
    }
    const dereg = Number(
      (
        (groups[0] as (typeof groups)[number]).Properties.TargetGroupAttributes as Array<{
          Key: string;
          Value: string;
        }>
      ).find((a) => a.Key === 'deregistration_delay.timeout_seconds')?.Value,
    );
    const [task] = resourcesOf(owner, 'AWS::ECS::TaskDefinition');
    const container = (
      (task as (typeof groups)[number]).Properties.ContainerDefinitions as Array<Record<string, unknown>>
    )[0] as {
      StopTimeout: number;
      Environment: Array<{ Name: string; Value: unknown }>;
      Secrets: Array<{ Name: string; ValueFrom: unknown }>;
      ReadonlyRootFilesystem: boolean;
    };
    const grace = Number(container.Environment.find((e) => e.Name === 'RELAY_DRAIN_GRACE_MS')?.Value) / 1000;
    expect(dereg).toBeGreaterThan(0);
    expect(grace).toBeGreaterThan(0);
    expect(grace).toBeLessThan(container.StopTimeout);
    expect(container.StopTimeout).toBeLessThanOrEqual(120);
    expect(container.Secrets.map((s) => s.Name)).toEqual(['RELAY_CLUSTER_SECRET']);
    expect(JSON.stringify(container.Environment)).not.toMatch(/SECRET/);
    expect(container.ReadonlyRootFilesystem).toBe(true);
  });

  it('opens the peer port only to the relay security group itself', () => {
    const rules = [
      ...resourcesOf(owner, 'AWS::EC2::SecurityGroupIngress').map((r) => r.Properties),
      ...resourcesOf(owner, 'AWS::EC2::SecurityGroup').flatMap(
        (g) => (g.Properties.SecurityGroupIngress as Array<Record<string, unknown>>) ?? [],
      ),
    ];
    const peer = rules.filter((r) => r.FromPort === 8897 || r.ToPort === 8897);
    expect(peer.length).toBe(1);
    expect(JSON.stringify(peer[0]?.SourceSecurityGroupId)).toMatch(/RelayRelaySecurityGroup/);
    expect(peer[0]?.CidrIp).toBeUndefined();
    // Only the two public protocol ports are open to any source (via the NLB, client IPs preserved).
    const open = rules.filter((r) => r.CidrIp === '0.0.0.0/0').map((r) => r.FromPort);
    expect(open.sort()).toEqual([8898, 8899]);
  });

  it('preserves client IPs at the NLB, so the relay can limit handshakes per source address', () => {
    for (const g of resourcesOf(owner, 'AWS::ElasticLoadBalancingV2::TargetGroup')) {
      expect(g.Properties.TargetGroupAttributes).toEqual(
        expect.arrayContaining([{ Key: 'preserve_client_ip.enabled', Value: 'true' }]),
      );
    }
  });

  it('generates the cluster secret in Secrets Manager', () => {
    owner.hasResourceProperties('AWS::SecretsManager::Secret', {
      GenerateSecretString: Match.objectLike({ PasswordLength: 48 }),
    });
  });

  it('scales on CPU and on active flows', () => {
    owner.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      PolicyType: 'TargetTrackingScaling',
      TargetTrackingScalingPolicyConfiguration: Match.objectLike({
        PredefinedMetricSpecification: { PredefinedMetricType: 'ECSServiceAverageCPUUtilization' },
      }),
    });
    owner.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ActiveFlowCount',
      Namespace: 'AWS/NetworkELB',
    });
  });

  it('builds the image from relay/Dockerfile, whose base is a build argument defaulting to public Node 22, run as non-root', () => {
    const docker = readFileSync(new URL('../../relay/Dockerfile', import.meta.url), 'utf8');
    expect(docker).toMatch(/^ARG NODE_IMAGE=public\.ecr\.aws\/docker\/library\/node:22/m);
    expect(docker).toMatch(/^FROM \$\{NODE_IMAGE\}$/m);
    expect(docker).toMatch(/^USER (?!0|root)\S+/m);
  });
});

describe('observability', () => {
  it.each([
    ['AWS/ApiGateway', '5xx'],
    ['AWS/Lambda', 'Errors'],
    ['AWS/Lambda', 'Throttles'],
    ['AWS/NetworkELB', 'UnHealthyHostCount'],
    ['AWS/ECS', 'CPUUtilization'],
  ])('alarms on %s %s, notifying the topic', (Namespace, MetricName) => {
    owner.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace,
      MetricName,
      AlarmActions: [{ Ref: Match.stringLikeRegexp('AlarmTopic') }],
    });
  });

  it('has a dashboard, and log groups with retention', () => {
    owner.hasResourceProperties('AWS::CloudWatch::Dashboard', { DashboardBody: Match.anyValue() });
    for (const g of resourcesOf(owner, 'AWS::Logs::LogGroup'))
      expect(g.Properties.RetentionInDays).toBeGreaterThan(0);
  });

  it('outputs the API URL, relay host and ports, and the table name', () => {
    const outputs = Object.keys(owner.findOutputs('*')).join(' ');
    for (const name of ['ApiUrl', 'RelayHost', 'RelayPort', 'RelayHttpUrl', 'TableName'])
      expect(outputs).toContain(name);
  });
});

describe('cdk-nag AwsSolutions', () => {
  it.each([
    ['us-east-1 (owner, with TLS)', primary],
    ['eu-west-1 (replica)', replica],
    ['single region', single],
  ])('%s: no unacknowledged errors or warnings', (_name, stack) => {
    const annotations = Annotations.fromStack(stack as RendezvousStack);
    const rule = Match.stringLikeRegexp('AwsSolutions-');
    expect(annotations.findError('*', rule)).toEqual([]);
    expect(annotations.findWarning('*', rule)).toEqual([]);
  });

  it('every acknowledgement carries a reason', () => {
    const metadata = JSON.stringify(Template.fromStack(primary as RendezvousStack).toJSON());
    const reasons = [...metadata.matchAll(/"reason":"([^"]*)"/g)].map((m) => m[1] as string);
    expect(reasons.length).toBeGreaterThan(0);
    for (const r of reasons) expect(r.length).toBeGreaterThan(40);
  });
});
