/**
 * The synthesised CloudFormation, asserted by property: what an operator relies on and what a
 * reviewer would check. The app gets cdk.json's context (feature flags included) and skips
 * bundling (the synth test runs the real CLI).
 */
import { readFileSync } from 'node:fs';
import type { Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { RELAY_NOFILE } from '../../infra/constructs/relay-service.js';
import type { RendezvousStack } from '../../infra/stack.js';
import { synthApp } from './cdk-app.js';

const CERT = 'arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555';
const DOMAIN = 'relay.{region}.example.com';

function synth(context: Record<string, unknown>): RendezvousStack[] {
  return synthApp(context).stacks;
}

const twoRegions = synthApp({ regions: 'us-east-1,eu-west-1', certificateArn: CERT, relayDomain: DOMAIN });
const [primary, replica] = twoRegions.stacks;
const tableStack = Template.fromStack(twoRegions.table);
const owner = Template.fromStack(primary as RendezvousStack);
const other = Template.fromStack(replica as RendezvousStack);
const [single] = synth({});
const alone = Template.fromStack(single as RendezvousStack);

type Resources = Record<string, { Type: string; Properties: Record<string, unknown> }>;
const resourcesOf = (t: Template, type: string) =>
  Object.entries(t.findResources(type) as Resources).map(([id, r]) => ({ id, ...r }));
/** The first element, or a failure naming what is missing. */
function first<T>(xs: T[], what = 'resource'): T {
  if (xs.length === 0) throw new Error(`no ${what}`);
  return xs[0] as T;
}

describe('state table', () => {
  it('is a global table with pk/sk, TTL on expiresAt, PITR, deletion protection, retained, replicated', () => {
    tableStack.hasResource('AWS::DynamoDB::GlobalTable', {
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
    const [table] = resourcesOf(tableStack, 'AWS::DynamoDB::GlobalTable');
    const replicas = table?.Properties.Replicas as Array<Record<string, unknown>>;
    expect(replicas.map((r) => r.Region).sort()).toEqual(['eu-west-1', 'us-east-1']);
    for (const r of replicas) {
      expect(r.DeletionProtectionEnabled).toBe(true);
      expect(r.PointInTimeRecoverySpecification).toEqual({ PointInTimeRecoveryEnabled: true });
    }
  });

  it('lives in its own stack, in the first region, alone: no service resource can roll it back', () => {
    expect(twoRegions.table.region).toBe('us-east-1');
    const types = Object.values(tableStack.toJSON().Resources as Record<string, { Type: string }>).map(
      (r) => r.Type,
    );
    expect(types).toEqual(['AWS::DynamoDB::GlobalTable']);
  });

  it('no service stack holds a table; every one depends on the table stack and on no other region', () => {
    for (const stack of twoRegions.stacks) {
      const t = Template.fromStack(stack);
      expect(Object.keys(t.findResources('AWS::DynamoDB::GlobalTable'))).toEqual([]);
      expect(Object.keys(t.findResources('AWS::DynamoDB::Table'))).toEqual([]);
      expect(stack.dependencies.map((d: Stack) => d.stackName)).toEqual(['Rendezvous-Table']);
    }
  });

  it('the order of the non-home regions changes nothing in the table template', () => {
    const a = synthApp({ regions: 'us-east-1,eu-west-1,ap-southeast-2' }).table;
    const b = synthApp({ regions: 'us-east-1,ap-southeast-2,eu-west-1' }).table;
    expect(Template.fromStack(b).toJSON()).toEqual(Template.fromStack(a).toJSON());
  });
});

describe('refused at synth (CloudFormation would refuse it mid-deploy)', () => {
  it('moving the table home: a different first region than the deployed one', () => {
    expect(() =>
      synthApp({ regions: 'eu-west-1,us-east-1', deployedRegions: 'us-east-1,eu-west-1' }),
    ).toThrow(/regions must start with us-east-1.*cannot move a global table/);
  });

  it('adding two replicas in one update, with the step to take instead', () => {
    expect(() =>
      synthApp({ regions: 'us-east-1,eu-west-1,ap-southeast-2', deployedRegions: 'us-east-1' }),
    ).toThrow(
      /one global-table replica per update.*-c regions=us-east-1,eu-west-1 -c deployedRegions=us-east-1/,
    );
  });

  it('adding one and removing another in one update', () => {
    expect(() =>
      synthApp({ regions: 'us-east-1,ap-southeast-2', deployedRegions: 'us-east-1,eu-west-1' }),
    ).toThrow(/changes 2 replicas at once/);
  });

  it('accepts one replica more or less, a reordering of the others, and any first deploy', () => {
    expect(() => synthApp({ regions: 'us-east-1,eu-west-1', deployedRegions: 'us-east-1' })).not.toThrow();
    // A removal names the region retiring (its replica's deletion protection lifted first:
    // test/infra/operations.test.ts).
    expect(() =>
      synthApp({
        regions: 'us-east-1',
        deployedRegions: 'us-east-1,eu-west-1',
        retiringRegions: 'eu-west-1',
      }),
    ).not.toThrow();
    expect(() =>
      synthApp({
        regions: 'us-east-1,ap-southeast-2,eu-west-1',
        deployedRegions: 'us-east-1,eu-west-1,ap-southeast-2',
      }),
    ).not.toThrow();
    expect(() => synthApp({ regions: 'us-east-1,eu-west-1,ap-southeast-2' })).not.toThrow();
  });

  it('a certificate without a relay domain, naming the fix', () => {
    expect(() => synthApp({ certificateArn: CERT })).toThrow(
      /certificateArn for us-east-1 needs a relay domain.*-c relayDomain=relay\.\{region\}\.example\.com/,
    );
  });

  it('one relay name for several regions', () => {
    expect(() => synthApp({ regions: 'us-east-1,eu-west-1', relayDomain: 'relay.example.com' })).toThrow(
      /each region needs its own/,
    );
  });
});

describe('registration API', () => {
  const functions = resourcesOf(owner, 'AWS::Lambda::Function').filter(
    (f) => (f.Properties.Handler as string) === 'index.handler',
  );
  const fnId = (part: string) => functions.find((f) => f.id.includes(part))?.id as string;

  it("routes PUT / to register and GET / to lookup (and any other method to lookup, for its 405), through each function's live alias (any path: test/infra/operations.test.ts)", () => {
    const routes = resourcesOf(owner, 'AWS::ApiGatewayV2::Route');
    const integrations = resourcesOf(owner, 'AWS::ApiGatewayV2::Integration');
    const aliases = resourcesOf(owner, 'AWS::Lambda::Alias');
    const targetFn = (routeKey: string) => {
      const route = routes.find((r) => r.Properties.RouteKey === routeKey);
      const integrationId = JSON.stringify(route?.Properties.Target).match(/"Ref":"([^"]+)"/)?.[1];
      const integration = integrations.find((i) => i.id === integrationId);
      // The integration calls an alias (never the function's $LATEST); the alias names the function.
      const aliasId = JSON.stringify(integration?.Properties.IntegrationUri).match(/"Ref":"([^"]+)"/)?.[1];
      const alias = aliases.find((a) => a.id === aliasId);
      expect(alias?.Properties.Name).toBe('live');
      return JSON.stringify(alias?.Properties.FunctionName).match(/"Ref":"([^"]+)"/)?.[1];
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
    alone.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({
          RENDEZVOUS_TABLE: 'rendezvous',
          RELAY_PUBLIC_PORT: '8899',
          RELAY_PUBLIC_HOST: { 'Fn::GetAtt': [Match.stringLikeRegexp('RelayNlb'), 'DNSName'] },
        }),
      },
    });
    // With a certificate: the region's own name, and the TLS port our clients use.
    owner.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({
          RELAY_PUBLIC_HOST: 'relay.us-east-1.example.com',
          RELAY_PUBLIC_PORT: '8899',
          RELAY_PUBLIC_TLS_PORT: '8443',
        }),
      },
    });
    const noTls = JSON.stringify(alone.findResources('AWS::Lambda::Function'));
    expect(noTls).not.toContain('RELAY_PUBLIC_TLS_PORT');
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

  it('functions get the home region (the table stack’s) and its replica; a single region grants only its own', () => {
    const homeEnv = (t: Template) =>
      resourcesOf(t, 'AWS::Lambda::Function')
        .filter((f) => f.Properties.Handler === 'index.handler')
        .map(
          (f) =>
            (f.Properties.Environment as { Variables: Record<string, unknown> }).Variables
              .RENDEZVOUS_HOME_REGION,
        );
    expect(homeEnv(other)).toEqual(['us-east-1', 'us-east-1']);
    expect(homeEnv(alone)).toEqual(['us-east-1', 'us-east-1']);
    const tableRegions = (t: Template) =>
      [
        ...new Set(
          [
            ...JSON.stringify(
              resourcesOf(t, 'AWS::IAM::Policy')
                .filter((p) => /Register|Lookup/.test(p.id))
                .map((p) => p.Properties.PolicyDocument),
            ).matchAll(/:dynamodb:([a-z0-9-]+):/g),
          ].map((m) => m[1]),
        ),
      ].sort();
    expect(tableRegions(other)).toEqual(['eu-west-1', 'us-east-1']);
    expect(tableRegions(alone)).toEqual(['us-east-1']);
  });

  it('lets lookup only read, register read and write single items, the relay also query and delete its parks', () => {
    // Distinct actions: the claims' actions are granted again on the other replicas a claims move
    // may pick (test/infra/claims-region.test.ts).
    const of = (part: string) => [
      ...new Set(
        dynamo
          .filter((s) => s.policy.includes(part))
          .flatMap((s) => s.actions)
          .sort(),
      ),
    ];
    expect(of('Lookup')).toEqual(['dynamodb:GetItem']);
    // Derived from what the code calls (test/infra/grants.test.ts); in the home region both
    // replicas' lists fall on the one replica.
    expect(of('Register')).toEqual([
      'dynamodb:DeleteItem',
      'dynamodb:GetItem',
      'dynamodb:PutItem',
      'dynamodb:UpdateItem',
    ]);
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
  const listenersOf = (t: Template) =>
    resourcesOf(t, 'AWS::ElasticLoadBalancingV2::Listener')
      .map((l) => {
        const tg = JSON.stringify(l.Properties.DefaultActions).match(/"Ref":"([^"]+)"/)?.[1] as string;
        const group = resourcesOf(t, 'AWS::ElasticLoadBalancingV2::TargetGroup').find((g) => g.id === tg);
        return `${l.Properties.Protocol} ${l.Properties.Port}→${group?.Properties.Port}`;
      })
      .sort();

  it('without a certificate: TCP 8899 (generic) and plain TCP 8898 (HTTP-specific), nothing on TLS', () => {
    expect(listenersOf(alone)).toEqual(['TCP 8898→8898', 'TCP 8899→8899']);
  });

  it('with a certificate: TCP 8899 stays for original clients, TLS 8443 → generic, TLS 443 → HTTP-specific', () => {
    expect(listenersOf(owner)).toEqual(['TCP 8899→8899', 'TLS 443→8898', 'TLS 8443→8899']);
    for (const l of resourcesOf(owner, 'AWS::ElasticLoadBalancingV2::Listener').filter(
      (x) => x.Properties.Protocol === 'TLS',
    )) {
      expect(l.Properties.Certificates).toEqual([{ CertificateArn: CERT }]);
      expect(l.Properties.SslPolicy).toMatch(/TLS13/);
    }
    // The certificate is regional: eu-west-1 got none, so it has no TLS listener either.
    expect(listenersOf(other)).toEqual(['TCP 8898→8898', 'TCP 8899→8899']);
  });

  it('relayTlsPort and relayHttpPort move those listeners', () => {
    const [a] = synth({ relayHttpPort: 8080 });
    expect(listenersOf(Template.fromStack(a as RendezvousStack))).toContain('TCP 8080→8898');
    const [b] = synth({ certificateArn: CERT, relayDomain: DOMAIN, relayTlsPort: 9443 });
    expect(listenersOf(Template.fromStack(b as RendezvousStack))).toContain('TLS 9443→8899');
  });

  it('each of three regions advertises its own relay name (triples, relay env, outputs)', () => {
    const stacks = synth({ regions: 'us-east-1,eu-west-1,ap-southeast-2', relayDomain: DOMAIN });
    const hosts = stacks.map((st) => {
      const t = Template.fromStack(st);
      const region = st.region;
      const host = `relay.${region}.example.com`;
      t.hasResourceProperties('AWS::Lambda::Function', {
        Environment: { Variables: Match.objectLike({ RELAY_PUBLIC_HOST: host }) },
      });
      const task = first(resourcesOf(t, 'AWS::ECS::TaskDefinition'));
      const defs = (task as typeof resourcesOf extends (...a: never[]) => Array<infer R> ? R : never)
        .Properties.ContainerDefinitions as Array<{ Environment: Array<{ Name: string; Value: unknown }> }>;
      const env = Object.fromEntries((defs[0]?.Environment ?? []).map((e) => [e.Name, e.Value]));
      expect(env.RELAY_PUBLIC_HOST).toBe(host);
      expect(env.RELAY_HTTP_DOMAIN).toBe(host);
      const outputs = Object.values(t.findOutputs('*')).map((o) => JSON.stringify(o.Value));
      expect(outputs).toContain(JSON.stringify(host));
      return host;
    });
    expect(new Set(hosts).size).toBe(3);
    // A map works too.
    const [x, y] = synth({
      regions: 'us-east-1,eu-west-1',
      relayDomain: '{"us-east-1":"use1.relay.example.com","eu-west-1":"euw1.relay.example.com"}',
    });
    for (const [st, host] of [
      [x, 'use1.relay.example.com'],
      [y, 'euw1.relay.example.com'],
    ] as const)
      Template.fromStack(st as RendezvousStack).hasResourceProperties('AWS::Lambda::Function', {
        Environment: { Variables: Match.objectLike({ RELAY_PUBLIC_HOST: host }) },
      });
  });

  it('tells the relay its region and public HTTP URL (plain HTTP on the NLB without a certificate), for cross-region redirects', () => {
    const envOf = (t: Template) =>
      Object.fromEntries(
        (
          (
            first(resourcesOf(t, 'AWS::ECS::TaskDefinition')).Properties.ContainerDefinitions as Array<{
              Environment: Array<{ Name: string; Value: unknown }>;
            }>
          )[0]?.Environment ?? []
        ).map((e) => [e.Name, e.Value]),
      );
    const plain = envOf(alone);
    expect(plain.RELAY_REGION).toBe('us-east-1');
    expect(plain.RELAY_HTTP_PUBLIC_URL).toEqual({
      'Fn::Join': [
        '',
        ['http://', { 'Fn::GetAtt': [expect.stringMatching(/RelayNlb/), 'DNSName'] }, ':8898'],
      ],
    });
    expect(envOf(owner).RELAY_HTTP_PUBLIC_URL).toBe('https://relay.us-east-1.example.com');
    expect(envOf(other)).toMatchObject({
      RELAY_REGION: 'eu-west-1',
      RELAY_HTTP_PUBLIC_URL: 'http://relay.eu-west-1.example.com:8898',
      // CONNECT codes are claimed at home, as the register function claims them.
      RENDEZVOUS_HOME_REGION: 'us-east-1',
    });
    expect(plain.RENDEZVOUS_HOME_REGION).toBe('us-east-1');
    const relayTableRegions = (t: Template) =>
      [
        ...new Set(
          [
            ...JSON.stringify(
              resourcesOf(t, 'AWS::IAM::Policy')
                .filter((p) => /Relay.*TaskRole/.test(p.id))
                .map((p) => p.Properties.PolicyDocument),
            ).matchAll(/:dynamodb:([a-z0-9-]+):/g),
          ].map((m) => m[1]),
        ),
      ].sort();
    expect(relayTableRegions(other)).toEqual(['eu-west-1', 'us-east-1']);
    expect(relayTableRegions(alone)).toEqual(['us-east-1']);
  });

  it('keeps zones cached by an earlier synth with credentials (a deployed VPC keeps its subnets)', () => {
    const [cached] = synth({
      account: '123456789012',
      'availability-zones:account=123456789012:region=us-east-1': ['us-east-1a', 'us-east-1b', 'us-east-1c'],
    });
    const zones = resourcesOf(Template.fromStack(cached as RendezvousStack), 'AWS::EC2::Subnet').map(
      (sn) => sn.Properties.AvailabilityZone,
    );
    expect([...new Set(zones)].sort()).toEqual(['us-east-1a', 'us-east-1b']);
  });

  it('without a hosted zone: no DNS records, health checks, custom domain or generated certificate', () => {
    for (const t of [owner, other, alone])
      for (const type of [
        'AWS::Route53::RecordSet',
        'AWS::Route53::HealthCheck',
        'AWS::ApiGatewayV2::DomainName',
        'AWS::CertificateManager::Certificate',
      ])
        expect(Object.keys(t.findResources(type))).toEqual([]);
  });

  it("sets the relay task's nofile limit explicitly, and no RELAY_HTTP_DOMAIN without a domain", () => {
    for (const t of [owner, alone]) {
      const task = first(resourcesOf(t, 'AWS::ECS::TaskDefinition'));
      const c = (task.Properties.ContainerDefinitions as Array<Record<string, unknown>>)[0] as {
        Ulimits: unknown;
        Environment: Array<{ Name: string }>;
      };
      expect(c.Ulimits).toEqual([{ Name: 'nofile', SoftLimit: RELAY_NOFILE, HardLimit: RELAY_NOFILE }]);
      expect(c.Environment.some((e) => e.Name === 'RELAY_HTTP_DOMAIN')).toBe(t === owner);
    }
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

  it('scales on CPU (parked sockets and splices: test/infra/observability.test.ts), not on NLB-wide flows', () => {
    owner.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      PolicyType: 'TargetTrackingScaling',
      TargetTrackingScalingPolicyConfiguration: Match.objectLike({
        PredefinedMetricSpecification: { PredefinedMetricType: 'ECSServiceAverageCPUUtilization' },
      }),
    });
    expect(JSON.stringify(owner.findResources('AWS::CloudWatch::Alarm'))).not.toContain('ActiveFlowCount');
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

  it.each([
    ['AWS/DynamoDB', 'ReadThrottleEvents'],
    ['AWS/DynamoDB', 'WriteThrottleEvents'],
  ])('alarms on %s %s of the local replica, notifying the topic', (Namespace, MetricName) => {
    owner.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace,
      MetricName,
      Dimensions: [{ Name: 'TableName', Value: 'rendezvous' }],
      AlarmActions: [{ Ref: Match.stringLikeRegexp('AlarmTopic') }],
    });
  });

  it('alarms "no healthy relay" on every target group (TLS ones included), an empty group counting as none', () => {
    const groups = resourcesOf(owner, 'AWS::ElasticLoadBalancingV2::TargetGroup').map((g) => g.id);
    expect(groups.length).toBe(3);
    const alarms = resourcesOf(owner, 'AWS::CloudWatch::Alarm').filter(
      (a) => a.Properties.MetricName === 'HealthyHostCount',
    );
    const covered = alarms.map((a) => {
      expect(a.Properties).toMatchObject({
        Namespace: 'AWS/NetworkELB',
        Statistic: 'Minimum',
        ComparisonOperator: 'LessThanThreshold',
        Threshold: 1,
        TreatMissingData: 'breaching',
      });
      expect(JSON.stringify(a.Properties.AlarmActions)).toMatch(
        /^\[\{"Ref":"[A-Za-z0-9]*AlarmTopic[A-Za-z0-9]*"\}\]$/,
      );
      return JSON.stringify(a.Properties.Dimensions).match(/"([A-Za-z0-9]+Relays[A-Za-z0-9]+)"/)?.[1];
    });
    expect(covered.sort()).toEqual([...groups].sort());
    const unhealthy = resourcesOf(owner, 'AWS::CloudWatch::Alarm').filter(
      (a) => a.Properties.MetricName === 'UnHealthyHostCount',
    );
    expect(unhealthy.length).toBe(3);
  });

  it('encrypts the topic with a customer-managed key whose policy lets CloudWatch alarms use it', () => {
    const topic = first(resourcesOf(owner, 'AWS::SNS::Topic'));
    const keyRef = (topic.Properties.KmsMasterKeyId as { 'Fn::GetAtt'?: [string, string] })['Fn::GetAtt'];
    expect(keyRef?.[1]).toBe('Arn');
    const key = first(
      resourcesOf(owner, 'AWS::KMS::Key').filter((k) => k.id === keyRef?.[0]),
      'topic key',
    );
    expect(key.Properties.EnableKeyRotation).toBe(true);
    const statements = (
      key.Properties.KeyPolicy as {
        Statement: Array<{ Effect: string; Principal?: { Service?: unknown }; Action: string | string[] }>;
      }
    ).Statement;
    const forCloudWatch = statements.filter(
      (st) => st.Effect === 'Allow' && JSON.stringify(st.Principal?.Service) === '"cloudwatch.amazonaws.com"',
    );
    const actions = forCloudWatch.flatMap((st) => ([] as string[]).concat(st.Action));
    expect(actions).toEqual(expect.arrayContaining(['kms:Decrypt', 'kms:GenerateDataKey*']));
    expect(JSON.stringify(topic.Properties)).not.toContain('alias/aws/sns');
  });

  it('has a dashboard, and log groups with retention', () => {
    owner.hasResourceProperties('AWS::CloudWatch::Dashboard', { DashboardBody: Match.anyValue() });
    for (const g of resourcesOf(owner, 'AWS::Logs::LogGroup'))
      expect(g.Properties.RetentionInDays).toBeGreaterThan(0);
  });

  it('outputs the API URL, relay host and ports, and the table name', () => {
    const outputs = Object.keys(owner.findOutputs('*')).join(' ');
    for (const name of [
      'ApiUrl',
      'RelayHost',
      'RelayPort',
      'RelayTlsPort',
      'RelayHttpUrl',
      'NlbDnsName',
      'TableName',
    ])
      expect(outputs).toContain(name);
  });
});

describe('cdk-nag AwsSolutions', () => {
  it.each([
    ['us-east-1 (owner, with TLS)', primary],
    ['eu-west-1 (replica)', replica],
    ['single region', single],
    ['table stack', twoRegions.table],
  ])('%s: no unacknowledged errors or warnings', (_name, stack) => {
    const annotations = Annotations.fromStack(stack as Stack);
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

  it('claims nothing the service does not do (the relay does not log every rendezvous)', () => {
    const metadata = JSON.stringify(Template.fromStack(primary as RendezvousStack).toJSON());
    expect(metadata).not.toMatch(/relay logs every rendezvous/);
    // What the ELB2 acknowledgement relies on instead is really there.
    owner.hasResourceProperties('AWS::EC2::FlowLog', { ResourceType: 'VPC', TrafficType: 'ALL' });
  });
});
