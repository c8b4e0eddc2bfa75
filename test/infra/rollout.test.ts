/**
 * The multi-region rollout, asserted on one synthesis of the pipeline app for three regions with
 * a hosted zone (the region stacks inside its stages are the very stacks it deploys):
 *
 * - the pipeline: table, then the canary region, its smoke test, its alarm-gated bake, then the
 *   other regions as one wave, each with the same checks; the alarm gate itself, run in a shell;
 * - rollback without a human: ECS deployment alarms with rollback beside the circuit breaker,
 *   Lambda versions behind a `live` alias shifted by a CodeDeploy canary that rolls back on the
 *   alias's error alarm, API integrations calling the alias;
 * - one name for users: `api.<zone>` as a latency record per region (custom domain, certificate,
 *   health check), each region's relay name and wildcard as aliases to its NLB;
 * - the runtime contract: home region for the functions (env and IAM on the home replica), the
 *   relay's region and public HTTP URL;
 * - cdk-nag: no unacknowledged finding in any stack, the pipeline's included.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, type Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planFromContext } from '../../infra/context.js';
import { alarmGateCommands, buildPipelineApp, pipelinePlanFromContext } from '../../infra/pipeline.js';
import type { RendezvousStack } from '../../infra/stack.js';
import { CDK_JSON_CONTEXT } from './cdk-app.js';

const REGIONS = ['us-east-1', 'eu-west-1', 'ap-southeast-2'];
const ZONE_ID = 'Z0123456789ABCDEFGHIJ';
const CONTEXT = {
  regions: REGIONS.join(','),
  account: '123456789012',
  repository: 'acme/rendezvous',
  connectionArn: 'arn:aws:codeconnections:us-east-1:123456789012:connection/0000-1111',
  hostedZoneId: ZONE_ID,
  zoneName: 'example.com',
  smokeSecretName: 'ops/rendezvous-smoke',
};

interface Res {
  id: string;
  Type: string;
  Properties: Record<string, unknown>;
  DependsOn?: string[];
  UpdatePolicy?: unknown;
}
const resourcesOf = (t: Template, type: string): Res[] =>
  Object.entries(t.findResources(type) as Record<string, Omit<Res, 'id'>>).map(([id, r]) => ({ ...r, id }));

let built: ReturnType<typeof buildPipelineApp>;
let pipeline: Template;
let regions: Array<{ region: string; stack: RendezvousStack; t: Template }>;
/** The pipeline's stages: name → actions (name, run order, provider, region, configuration). */
let stages: Array<{
  name: string;
  actions: Array<{ name: string; runOrder: number; provider: string; region?: string; config: string }>;
}>;

beforeAll(() => {
  const app = new App({
    context: { ...CDK_JSON_CONTEXT, 'aws:cdk:bundling-stacks': [], skipRelayBuild: 'true', ...CONTEXT },
  });
  built = buildPipelineApp(app);
  app.synth();
  pipeline = Template.fromStack(built.pipelineStack);
  regions = [built.canary, ...built.wave].map((s) => ({
    region: s.stack.region,
    stack: s.stack,
    t: Template.fromStack(s.stack),
  }));
  const [cp] = resourcesOf(pipeline, 'AWS::CodePipeline::Pipeline');
  if (!cp) throw new Error('no pipeline');
  stages = (
    cp.Properties.Stages as Array<{
      Name: string;
      Actions: Array<{
        Name: string;
        RunOrder: number;
        ActionTypeId: { Provider: string };
        Region?: string;
        Configuration: unknown;
      }>;
    }>
  ).map((s) => ({
    name: s.Name,
    actions: s.Actions.map((a) => ({
      name: a.Name,
      runOrder: a.RunOrder,
      provider: a.ActionTypeId.Provider,
      region: a.Region,
      config: JSON.stringify(a.Configuration),
    })),
  }));
}, 300_000);

const stage = (name: string) => {
  const s = stages.find((x) => x.name === name);
  if (!s) throw new Error(`no stage ${name} (have ${stages.map((x) => x.name).join(', ')})`);
  return s;
};
const action = (stageName: string, part: string) => {
  const a = stage(stageName).actions.find((x) => x.name.includes(part));
  if (!a) throw new Error(`no action ${part} in ${stageName}`);
  return a;
};
/** The CodeBuild project an action runs, with its buildspec and environment. */
const projectOf = (config: string) => {
  const id = config.match(/"ProjectName":\{"Ref":"([^"]+)"\}/)?.[1];
  const project = resourcesOf(pipeline, 'AWS::CodeBuild::Project').find((p) => p.id === id);
  if (!project) throw new Error(`no project for ${config}`);
  const source = project.Properties.Source as { BuildSpec: string };
  const env = project.Properties.Environment as { EnvironmentVariables?: Array<Record<string, unknown>> };
  return { id, buildSpec: String(source.BuildSpec), env: env.EnvironmentVariables ?? [] };
};

describe('the pipeline: table, canary, bake, the rest', () => {
  it('deploys the table, then the canary region alone, then the other regions together, in that order', () => {
    const names = stages.map((s) => s.name);
    expect(names.slice(0, 4)).toEqual(['Source', 'Build', 'UpdatePipeline', 'Assets']);
    expect(names.slice(4)).toEqual(['Table', 'Region-us-east-1', 'Wave']);
    const deployed = (name: string) =>
      stage(name)
        .actions.filter((a) => a.provider === 'CloudFormation' && a.config.includes('CHANGE_SET_EXECUTE'))
        .map((a) => JSON.parse(a.config).StackName as string)
        .sort();
    expect(deployed('Table')).toEqual(['Rendezvous-Table']);
    expect(deployed('Region-us-east-1')).toEqual(['Rendezvous-us-east-1']);
    expect(deployed('Wave')).toEqual(['Rendezvous-ap-southeast-2', 'Rendezvous-eu-west-1']);
    // The wave's regions deploy side by side, each in its own region.
    const wave = stage('Wave').actions.filter((a) => a.config.includes('CHANGE_SET_EXECUTE'));
    expect(new Set(wave.map((a) => a.runOrder)).size).toBe(1);
    expect(wave.map((a) => a.region).sort()).toEqual(['ap-southeast-2', 'eu-west-1']);
  });

  it('after each region deploys: the smoke test, then the alarm gate (nothing later runs before both pass)', () => {
    for (const [stageName, region] of [
      ['Region-us-east-1', 'us-east-1'],
      ['Wave', 'eu-west-1'],
      ['Wave', 'ap-southeast-2'],
    ] as const) {
      const deploy = action(stageName, `Rendezvous-${region}.Deploy`);
      const smoke = action(stageName, `Smoke-${region}`);
      const gate = action(stageName, `AlarmGate-${region}`);
      expect(deploy.runOrder).toBeLessThan(smoke.runOrder);
      expect(smoke.runOrder).toBeLessThan(gate.runOrder);
    }
  });

  it("runs `rendezvous smoke` against the region's API and relay, the secret from Secrets Manager, never in the command", () => {
    for (const region of REGIONS) {
      const stageName = region === 'us-east-1' ? 'Region-us-east-1' : 'Wave';
      const smoke = action(stageName, `Smoke-${region}`);
      const project = projectOf(smoke.config);
      expect(project.buildSpec).toContain(
        'node bin/rendezvous.js smoke --api \\"$API_URL\\" --uuid \\"$SMOKE_UUID\\" --relay-http \\"$RELAY_HTTP_URL\\"',
      );
      expect(project.buildSpec).toMatch(/npm ci.*npm run build/s);
      expect(JSON.parse(project.buildSpec).phases.install['runtime-versions']).toEqual({ nodejs: '22' });
      const plain = [...project.env, ...JSON.parse(JSON.parse(smoke.config).EnvironmentVariables)];
      expect(JSON.stringify(plain)).toMatch(
        new RegExp(
          `"(name|Name)":"SMOKE_UUID","(type|Type)":"PLAINTEXT","(value|Value)":"rendezvous-smoke-${region}"`,
        ),
      );
      expect(project.env).toContainEqual({
        Name: 'RENDEZVOUS_SECRET',
        Type: 'SECRETS_MANAGER',
        Value: `ops/rendezvous-smoke/${region}`,
      });
      expect(project.buildSpec).not.toMatch(/RENDEZVOUS_SECRET/);
      // API_URL and RELAY_HTTP_URL are this region's stack outputs, as the pipeline read them.
      const vars = JSON.parse(JSON.parse(smoke.config).EnvironmentVariables) as Array<{
        name: string;
        value: string;
      }>;
      const stackArtifact = regions.find((r) => r.region === region)?.stack.artifactId as string;
      expect(vars.find((v) => v.name === 'API_URL')?.value).toMatch(
        new RegExp(`^#\\{${stackArtifact}\\.RegistrationApiUrl[A-Z0-9]+\\}$`),
      );
      expect(vars.find((v) => v.name === 'RELAY_HTTP_URL')?.value).toMatch(
        new RegExp(`^#\\{${stackArtifact}\\.RelayRelayHttpUrl[A-Z0-9]+\\}$`),
      );
      const outputs = Object.keys(regions.find((r) => r.region === region)?.t.findOutputs('*') ?? {});
      expect(outputs.some((o) => o.startsWith('RegistrationApiUrl'))).toBe(true);
    }
    // The smoke step may read its secret: the project role is granted it.
    const policies = JSON.stringify(pipeline.findResources('AWS::IAM::Policy'));
    expect(policies).toMatch(/secretsmanager:GetSecretValue/);
    expect(policies).toContain(':secret:ops/rendezvous-smoke/us-east-1');
  });

  it('gives every region its own smoke identity and secret: the wave runs its smoke tests at the same time, and one identity would replace the other’s registration mid-test', () => {
    const identities = REGIONS.map((region) => {
      const stageName = region === 'us-east-1' ? 'Region-us-east-1' : 'Wave';
      const smoke = action(stageName, `Smoke-${region}`);
      const project = projectOf(smoke.config);
      const plain = [...project.env, ...JSON.parse(JSON.parse(smoke.config).EnvironmentVariables)] as Array<
        Record<string, string>
      >;
      const uuid = plain.find((v) => (v.name ?? v.Name) === 'SMOKE_UUID');
      const secret = project.env.find((v) => v.Name === 'RENDEZVOUS_SECRET');
      return { uuid: uuid?.value ?? uuid?.Value, secret: secret?.Value };
    });
    expect(new Set(identities.map((i) => i.uuid)).size).toBe(REGIONS.length);
    expect(new Set(identities.map((i) => i.secret)).size).toBe(REGIONS.length);
    // Each smoke project may read its own secret (and, by name, no other region's).
    const policies = JSON.stringify(pipeline.findResources('AWS::IAM::Policy'));
    for (const region of REGIONS) expect(policies).toContain(`:secret:ops/rendezvous-smoke/${region}`);
  });

  it('the source action may use the connection under both service prefixes (AWS matches the prefix to the ARN’s)', () => {
    const statements = resourcesOf(pipeline, 'AWS::IAM::Policy').flatMap(
      (p) =>
        (p.Properties.PolicyDocument as { Statement: Array<{ Action: unknown; Resource: unknown }> })
          .Statement,
    );
    const use = statements.filter((s) => JSON.stringify(s.Action).includes(':UseConnection'));
    const actions = use.flatMap((s) => ([] as string[]).concat(s.Action as string));
    expect(actions).toEqual(
      expect.arrayContaining(['codestar-connections:UseConnection', 'codeconnections:UseConnection']),
    );
    for (const s of use) expect(JSON.stringify(s.Resource)).toContain(CONTEXT.connectionArn);
  });

  it('builds on Node.js 22 with a pinned CDK CLI and cdk-assets (the CLI the lock file installs)', () => {
    const installed = JSON.parse(
      readFileSync(new URL('../../node_modules/aws-cdk/package.json', import.meta.url), 'utf8'),
    ) as { version: string };
    expect(installed.version).toMatch(/^2\.1148\./);
    const specs = resourcesOf(pipeline, 'AWS::CodeBuild::Project').map((p) =>
      String((p.Properties.Source as { BuildSpec?: string }).BuildSpec ?? ''),
    );
    const all = specs.join('\n');
    expect(all).not.toMatch(/"nodejs":\s*"20"/);
    expect(all).toContain(`npm install -g aws-cdk@${installed.version}`);
    expect(all).not.toMatch(/aws-cdk@2"/);
    expect(all).not.toContain('cdk-assets@latest');
    // The asset projects' buildspecs are files in the assembly when published one per asset type;
    // here they are inline: every cdk-assets install names an exact version.
    for (const m of all.matchAll(/cdk-assets@([^\s"]+)/g)) expect(m[1]).toMatch(/^\d+\.\d+\.\d+$/);
    expect(all).toMatch(/cdk-assets@\d+\.\d+\.\d+/);
  });

  it("gates each region on its own alarms (by name prefix), with the bake's length, and may list them", () => {
    for (const [region, minutes] of [
      ['us-east-1', 15],
      ['eu-west-1', 5],
      ['ap-southeast-2', 5],
    ] as const) {
      const stageName = region === 'us-east-1' ? 'Region-us-east-1' : 'Wave';
      const gate = projectOf(action(stageName, `AlarmGate-${region}`).config);
      expect(gate.buildSpec).toContain(
        `aws cloudwatch describe-alarms --region ${region} --alarm-name-prefix 'rendezvous.${region}.' --state-value ALARM`,
      );
      expect(gate.buildSpec).toContain(`+ ${minutes * 60} ))`);
    }
    const statements = resourcesOf(pipeline, 'AWS::IAM::Policy').flatMap(
      (p) => (p.Properties.PolicyDocument as { Statement: Array<{ Action: unknown }> }).Statement,
    );
    expect(statements.some((s) => JSON.stringify(s.Action) === '"cloudwatch:DescribeAlarms"')).toBe(true);
    // Every alarm of a region stack carries that prefix, so the gate sees them all.
    for (const { region, t } of regions) {
      const alarms = resourcesOf(t, 'AWS::CloudWatch::Alarm').filter((a) => a.Properties.AlarmName);
      expect(alarms.length).toBeGreaterThanOrEqual(12);
      for (const a of alarms)
        expect(a.Properties.AlarmName).toMatch(new RegExp(`^rendezvous\\.${region}\\.`));
    }
  });

  it('synthesises itself with the context given beyond cdk.json, and updates itself before deploying', () => {
    const synth = projectOf(action('Build', 'Synth').config);
    expect(synth.buildSpec).toContain('npx cdk synth -c pipeline=true');
    expect(synth.buildSpec).toContain("-c 'regions=us-east-1,eu-west-1,ap-southeast-2'");
    expect(synth.buildSpec).toContain(`-c 'hostedZoneId=${ZONE_ID}'`);
    // What cdk.json holds is read from the repository at each run (a committed change applies),
    // never frozen into the step.
    expect(synth.buildSpec).not.toMatch(/tableName=|relayPort=|relayDesiredCount=/);
    expect(stages.map((s) => s.name)).toContain('UpdatePipeline');
  });

  it('is clean under cdk-nag: the pipeline, its cross-region support stacks, the table and every region', () => {
    const support = Object.values(built.pipeline.pipeline.crossRegionSupport)
      .map((s) => s.stack)
      .filter((s) => s !== built.pipelineStack);
    expect(support.map((s) => s.region).sort()).toEqual(['ap-southeast-2', 'eu-west-1']);
    const all: Stack[] = [built.pipelineStack, ...support, built.table.stack, ...regions.map((r) => r.stack)];
    const rule = Match.stringLikeRegexp('AwsSolutions-');
    for (const st of all) {
      const a = Annotations.fromStack(st);
      expect(a.findError('*', rule), st.node.path).toEqual([]);
      expect(a.findWarning('*', rule), st.node.path).toEqual([]);
    }
    // And the checks really ran inside the stages: the region stacks carry nag's acknowledgements.
    const metadata = JSON.stringify(regions[1]?.t.toJSON());
    expect(metadata).toContain('AwsSolutions-L1');
  });
});

describe('the pipeline, another canary and a manual promotion', () => {
  it('canaryRegion picks the region that goes first; canaryApproval waits for a person after its bake', () => {
    const app = new App({
      context: {
        ...CDK_JSON_CONTEXT,
        'aws:cdk:bundling-stacks': [],
        skipRelayBuild: 'true',
        ...CONTEXT,
        regions: 'us-east-1,eu-west-1',
        canaryRegion: 'eu-west-1',
        canaryApproval: 'true',
        bakeMinutes: '30',
      },
    });
    const other = buildPipelineApp(app);
    const [cp] = resourcesOf(Template.fromStack(other.pipelineStack), 'AWS::CodePipeline::Pipeline');
    const st = (cp?.Properties.Stages ?? []) as Array<{
      Name: string;
      Actions: Array<{
        Name: string;
        RunOrder: number;
        ActionTypeId: { Category: string; Provider: string };
      }>;
    }>;
    // A wave of one region is a stage of its own.
    expect(st.map((x) => x.Name).slice(4)).toEqual(['Table', 'Region-eu-west-1', 'Region-us-east-1']);
    const canary = st.find((x) => x.Name === 'Region-eu-west-1')?.Actions ?? [];
    const order = (part: string) => canary.find((a) => a.Name.includes(part))?.RunOrder ?? -1;
    const approval = canary.find((a) => a.ActionTypeId.Category === 'Approval');
    expect(approval?.ActionTypeId.Provider).toBe('Manual');
    expect(order('AlarmGate-eu-west-1')).toBeLessThan(approval?.RunOrder ?? -1);
    expect(order('Smoke-eu-west-1')).toBeLessThan(order('AlarmGate-eu-west-1'));
    const wave = st.find((x) => x.Name === 'Region-us-east-1')?.Actions ?? [];
    expect(wave.some((a) => a.Name.includes('Rendezvous-us-east-1.Deploy'))).toBe(true);
    expect(wave.some((a) => a.ActionTypeId.Category === 'Approval')).toBe(false);
  });
});

describe('the alarm gate, run', () => {
  let bin: string;
  beforeAll(() => {
    bin = mkdtempSync(join(tmpdir(), 'gate-'));
    // A stand-in for the AWS CLI: records its arguments, prints what CloudWatch would.
    writeFileSync(
      join(bin, 'aws'),
      '#!/bin/sh\nprintf "%s\\n" "$@" > "$GATE_DIR/args"\n[ -n "$FAIL" ] && exit 255\nprintf "%s\\n" "$FIRING"\n',
    );
    chmodSync(join(bin, 'aws'), 0o755);
  });
  afterAll(() => rmSync(bin, { recursive: true, force: true }));
  const gate = (env: Record<string, string>) =>
    spawnSync('sh', ['-c', alarmGateCommands('eu-west-1', 0).join('\n')], {
      env: { PATH: `${bin}:${process.env.PATH}`, GATE_DIR: bin, ...env },
      encoding: 'utf8',
    });

  it('stops the promotion while an alarm of the region is in ALARM, naming it', () => {
    const r = gate({ FIRING: 'rendezvous.eu-west-1.UnhealthyRelaysGeneric, rendezvous.eu-west-1.Api5xx' });
    expect(r.status).toBe(1);
    expect(r.stdout).toContain(
      'not promoting eu-west-1: alarms in ALARM: rendezvous.eu-west-1.UnhealthyRelaysGeneric',
    );
    const args = readFileSync(join(bin, 'args'), 'utf8').split('\n');
    expect(args).toEqual(
      expect.arrayContaining([
        'describe-alarms',
        '--region',
        'eu-west-1',
        '--alarm-name-prefix',
        'rendezvous.eu-west-1.',
      ]),
    );
    expect(args[args.indexOf('--state-value') + 1]).toBe('ALARM');
  });

  it('promotes when no alarm is in ALARM (the CLI prints nothing, or None)', () => {
    for (const FIRING of ['', 'None']) {
      const r = gate({ FIRING });
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('eu-west-1: no alarm in ALARM');
    }
  });

  it('fails closed when the alarms cannot be listed', () => {
    expect(gate({ FIRING: '', FAIL: '1' }).status).not.toBe(0);
  });
});

describe('rollback without a human', () => {
  it('relays: ECS rolls back on the unhealthy-relay alarms, beside the circuit breaker', () => {
    for (const { region, t } of regions) {
      const [service] = resourcesOf(t, 'AWS::ECS::Service');
      const config = service?.Properties.DeploymentConfiguration as {
        DeploymentCircuitBreaker: unknown;
        Alarms: { AlarmNames: string[]; Enable: boolean; Rollback: boolean };
      };
      expect(config.DeploymentCircuitBreaker).toEqual({ Enable: true, Rollback: true });
      expect(config.Alarms.Enable).toBe(true);
      expect(config.Alarms.Rollback).toBe(true);
      // Every listener's "unhealthy relay" alarm (three with the zone's certificate), by name,
      // each an alarm of this stack created before the service.
      expect(config.Alarms.AlarmNames.sort()).toEqual(
        ['Generic', 'GenericTls', 'Https'].map((n) => `rendezvous.${region}.UnhealthyRelays${n}`).sort(),
      );
      const alarms = resourcesOf(t, 'AWS::CloudWatch::Alarm');
      for (const name of config.Alarms.AlarmNames) {
        const alarm = alarms.find((a) => a.Properties.AlarmName === name);
        expect(alarm?.Properties.MetricName).toBe('UnHealthyHostCount');
        expect(service?.DependsOn as string[]).toContain(alarm?.id);
      }
    }
  });

  it('functions: a version per release behind the live alias, shifted by a CodeDeploy canary that rolls back on the alias errors', () => {
    for (const { region, t } of regions) {
      const functions = resourcesOf(t, 'AWS::Lambda::Function').filter(
        (f) => f.Properties.Handler === 'index.handler',
      );
      const aliases = resourcesOf(t, 'AWS::Lambda::Alias');
      const groups = resourcesOf(t, 'AWS::CodeDeploy::DeploymentGroup');
      expect(aliases.length).toBe(2);
      expect(groups.length).toBe(2);
      expect(resourcesOf(t, 'AWS::Lambda::Version').length).toBe(2);
      for (const fn of functions) {
        const alias = aliases.find(
          (a) => JSON.stringify(a.Properties.FunctionName) === JSON.stringify({ Ref: fn.id }),
        );
        if (!alias) throw new Error(`no alias for ${fn.id}`);
        expect(alias.Properties.Name).toBe('live');
        const update = (
          alias.UpdatePolicy as { CodeDeployLambdaAliasUpdate: { DeploymentGroupName: { Ref: string } } }
        ).CodeDeployLambdaAliasUpdate;
        const group = groups.find((g) => g.id === update.DeploymentGroupName.Ref);
        expect(group?.Properties.DeploymentConfigName).toBe(
          'CodeDeployDefault.LambdaCanary10Percent5Minutes',
        );
        const auto = group?.Properties.AutoRollbackConfiguration as { Enabled: boolean; Events: string[] };
        expect(auto.Enabled).toBe(true);
        expect(auto.Events).toEqual(
          expect.arrayContaining(['DEPLOYMENT_FAILURE', 'DEPLOYMENT_STOP_ON_ALARM']),
        );
        const alarmConfig = group?.Properties.AlarmConfiguration as {
          Enabled: boolean;
          Alarms: Array<{ Name: unknown }>;
        };
        expect(alarmConfig.Enabled).toBe(true);
        expect(alarmConfig.Alarms.length).toBe(1);
        const alarmRef = JSON.stringify(alarmConfig.Alarms[0]?.Name).match(/"Ref":"([^"]+)"/)?.[1];
        const alarm = resourcesOf(t, 'AWS::CloudWatch::Alarm').find((a) => a.id === alarmRef);
        expect(alarm?.Properties).toMatchObject({
          Namespace: 'AWS/Lambda',
          MetricName: 'Errors',
          Period: 60,
          Threshold: 1,
          ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        });
        expect(String(alarm?.Properties.AlarmName)).toMatch(
          new RegExp(`^rendezvous\\.${region}\\.\\w+CanaryErrors$`),
        );
        // Errors through the alias: the canary's 10 % are in them.
        const dims = alarm?.Properties.Dimensions as Array<{ Name: string; Value: unknown }>;
        expect(dims.find((d) => d.Name === 'Resource')?.Value).toEqual({
          'Fn::Join': ['', [{ Ref: fn.id }, ':live']],
        });
      }
      // The API calls the aliases only.
      for (const i of resourcesOf(t, 'AWS::ApiGatewayV2::Integration')) {
        const ref = JSON.stringify(i.Properties.IntegrationUri).match(/"Ref":"([^"]+)"/)?.[1];
        expect(aliases.map((a) => a.id)).toContain(ref);
      }
    }
  });
});

describe('one name for users', () => {
  it('api.<zone> is a latency record in every region, to that region’s custom domain, behind a health check', () => {
    const seen = regions.map(({ region, t }) => {
      const [domain] = resourcesOf(t, 'AWS::ApiGatewayV2::DomainName');
      const props = domain?.Properties as {
        DomainName: string;
        DomainNameConfigurations: Array<{ EndpointType: string; CertificateArn: unknown }>;
      };
      expect(props.DomainName).toBe('api.example.com');
      expect(props.DomainNameConfigurations[0]?.EndpointType).toBe('REGIONAL');
      t.hasResourceProperties('AWS::ApiGatewayV2::ApiMapping', { DomainName: { Ref: domain?.id } });
      const records = resourcesOf(t, 'AWS::Route53::RecordSet').filter(
        (r) => r.Properties.Name === 'api.example.com.',
      );
      expect(records.length).toBe(1);
      const rec = records[0]?.Properties as Record<string, unknown>;
      expect(rec).toMatchObject({ Type: 'A', HostedZoneId: ZONE_ID, Region: region, SetIdentifier: region });
      expect(JSON.stringify(rec.AliasTarget)).toContain(`"${domain?.id}","RegionalDomainName"`);
      // The health check: all of API reachable (TCP 443), API 5xx alarm quiet, a healthy relay.
      const checks = resourcesOf(t, 'AWS::Route53::HealthCheck');
      const top = checks.find((c) => JSON.stringify(rec.HealthCheckId).includes(`"${c.id}"`));
      const config = top?.Properties.HealthCheckConfig as {
        Type: string;
        ChildHealthChecks: unknown[];
        HealthThreshold: number;
      };
      expect(config.Type).toBe('CALCULATED');
      expect(config.HealthThreshold).toBe(config.ChildHealthChecks.length);
      const children = checks
        .filter((c) => c !== top)
        .map((c) => c.Properties.HealthCheckConfig as Record<string, unknown>);
      expect(children.length).toBe(config.ChildHealthChecks.length);
      const alarmName = (ref: unknown) =>
        resourcesOf(t, 'AWS::CloudWatch::Alarm').find(
          (a) => JSON.stringify({ Ref: a.id }) === JSON.stringify(ref),
        )?.Properties.AlarmName;
      expect(
        children
          .map((c) => alarmName((c.AlarmIdentifier as { Name?: unknown } | undefined)?.Name))
          .filter(Boolean)
          .sort(),
      ).toEqual([`rendezvous.${region}.Api5xx`, `rendezvous.${region}.NoHealthyRelayGeneric`]);
      const tcp = children.find((c) => c.Type === 'TCP');
      expect(tcp?.Port).toBe(443);
      expect(JSON.stringify(tcp?.FullyQualifiedDomainName)).toContain(`.execute-api.${region}.`);
      return rec.SetIdentifier;
    });
    expect(seen.sort()).toEqual([...REGIONS].sort());
  });

  it('each region has a certificate for the API name and its own relay names, validated in the zone', () => {
    for (const { region, t } of regions) {
      t.hasResourceProperties('AWS::CertificateManager::Certificate', {
        DomainName: 'api.example.com',
        SubjectAlternativeNames: [`relay-${region}.example.com`, `*.relay-${region}.example.com`],
        ValidationMethod: 'DNS',
        DomainValidationOptions: Match.arrayWith([{ DomainName: 'api.example.com', HostedZoneId: ZONE_ID }]),
      });
      // The relay's TLS listeners use it.
      const [cert] = resourcesOf(t, 'AWS::CertificateManager::Certificate');
      const tls = resourcesOf(t, 'AWS::ElasticLoadBalancingV2::Listener').filter(
        (l) => l.Properties.Protocol === 'TLS',
      );
      expect(tls.map((l) => l.Properties.Port).sort()).toEqual([443, 8443]);
      for (const l of tls) expect(l.Properties.Certificates).toEqual([{ CertificateArn: { Ref: cert?.id } }]);
    }
  });

  it("each region's relay has its own name and wildcard, aliases to its own NLB", () => {
    for (const { region, t } of regions) {
      const [nlb] = resourcesOf(t, 'AWS::ElasticLoadBalancingV2::LoadBalancer');
      for (const name of [`relay-${region}.example.com.`, `*.relay-${region}.example.com.`]) {
        const rec = resourcesOf(t, 'AWS::Route53::RecordSet').find((r) => r.Properties.Name === name);
        expect(rec?.Properties).toMatchObject({ Type: 'A', HostedZoneId: ZONE_ID });
        expect(JSON.stringify(rec?.Properties.AliasTarget)).toContain(`"${nlb?.id}","DNSName"`);
      }
    }
  });
});

describe('offline with an account', () => {
  it("takes the region's first two zones from CloudFormation, never from a lookup at synth", () => {
    for (const { t } of regions) {
      const zones = resourcesOf(t, 'AWS::EC2::Subnet').map((sn) =>
        JSON.stringify(sn.Properties.AvailabilityZone),
      );
      expect(zones.length).toBe(4);
      expect(new Set(zones)).toEqual(
        new Set([0, 1].map((i) => JSON.stringify({ 'Fn::Select': [i, { 'Fn::GetAZs': '' }] }))),
      );
    }
  });
});

describe('the runtime contract (home region, relay region and URL)', () => {
  it('functions know the home region and may use the home replica; the relay knows its region and public HTTP URL', () => {
    for (const { region, t } of regions) {
      for (const f of resourcesOf(t, 'AWS::Lambda::Function').filter(
        (x) => x.Properties.Handler === 'index.handler',
      ))
        expect(
          (f.Properties.Environment as { Variables: Record<string, unknown> }).Variables
            .RENDEZVOUS_HOME_REGION,
        ).toBe('us-east-1');
      const dynamo = resourcesOf(t, 'AWS::IAM::Policy')
        .filter((p) => /Register|Lookup/.test(p.id))
        .flatMap(
          (p) =>
            (p.Properties.PolicyDocument as { Statement: Array<{ Action: unknown; Resource: unknown }> })
              .Statement,
        )
        .filter((s) => JSON.stringify(s.Action).includes('dynamodb:'));
      const resources = JSON.stringify(dynamo.map((s) => s.Resource));
      expect(resources).toContain(`:dynamodb:${region}:123456789012:table/rendezvous`);
      expect(resources).toContain(':dynamodb:us-east-1:123456789012:table/rendezvous');
      const [task] = resourcesOf(t, 'AWS::ECS::TaskDefinition');
      if (!task) throw new Error('no task definition');
      const env = Object.fromEntries(
        (
          (
            task.Properties.ContainerDefinitions as Array<{
              Environment: Array<{ Name: string; Value: unknown }>;
            }>
          )[0]?.Environment ?? []
        ).map((e) => [e.Name, e.Value]),
      );
      expect(env.RELAY_REGION).toBe(region);
      expect(env.RELAY_HTTP_PUBLIC_URL).toBe(`https://relay-${region}.example.com`);
      expect(env.RELAY_HTTP_DOMAIN).toBe(`relay-${region}.example.com`);
    }
  });
});

describe('context checks (no synthesis)', () => {
  const plan = (ctx: Record<string, unknown>) => planFromContext((k) => ctx[k]);
  const pipelinePlan = (ctx: Record<string, unknown>) => pipelinePlanFromContext((k) => ctx[k], plan(ctx));

  it('a hosted zone needs both its id and name, and relay names inside it (unless certificates are given)', () => {
    expect(() => plan({ hostedZoneId: ZONE_ID })).toThrow(/both -c hostedZoneId=.* and -c zoneName=/);
    expect(() => plan({ zoneName: 'example.com' })).toThrow(/both/);
    expect(() =>
      plan({ hostedZoneId: ZONE_ID, zoneName: 'example.com', relayDomain: 'relay.{region}.other.org' }),
    ).toThrow(/outside the hosted zone example\.com/);
    const p = plan({ hostedZoneId: ZONE_ID, zoneName: 'Example.com.', regions: 'us-east-1,eu-west-1' });
    expect(p.apiDomain).toBe('api.example.com');
    expect(p.domains).toEqual({
      'us-east-1': 'relay-us-east-1.example.com',
      'eu-west-1': 'relay-eu-west-1.example.com',
    });
  });

  it('the pipeline needs an account and a source, and a canary among the regions', () => {
    const saved = process.env.CDK_DEFAULT_ACCOUNT;
    delete process.env.CDK_DEFAULT_ACCOUNT;
    try {
      expect(() => pipelinePlan({ repository: 'a/b', connectionArn: 'arn:x' })).toThrow(/-c account=/);
    } finally {
      if (saved !== undefined) process.env.CDK_DEFAULT_ACCOUNT = saved;
    }
    expect(() => pipelinePlan({ account: '123456789012' })).toThrow(/needs its source/);
    // CodeCommit takes no new customers: the option is for accounts that already use it.
    expect(() => pipelinePlan({ account: '123456789012' })).toThrow(
      /CodeCommit.*accounts that already use it/,
    );
    expect(() =>
      pipelinePlan({
        account: '123456789012',
        codeCommitRepository: 'r',
        regions: 'us-east-1,eu-west-1',
        canaryRegion: 'ap-south-1',
      }),
    ).toThrow(/canaryRegion ap-south-1 is not one of regions/);
    const p = pipelinePlan({
      account: '123456789012',
      codeCommitRepository: 'r',
      regions: 'us-east-1,eu-west-1,ap-southeast-2',
      canaryRegion: 'eu-west-1',
      bakeMinutes: '30',
    });
    expect(p.canary).toBe('eu-west-1');
    expect(p.wave).toEqual(['us-east-1', 'ap-southeast-2']);
    expect(p.bakeMinutes).toBe(30);
    expect(() =>
      pipelinePlan({ account: '123456789012', codeCommitRepository: 'r', bakeMinutes: 'soon' }),
    ).toThrow(/bakeMinutes/);
  });

  it('the generated gate script is valid sh', () => {
    execFileSync('sh', ['-n', '-c', alarmGateCommands('us-east-1', 15).join('\n')]);
  });
});
