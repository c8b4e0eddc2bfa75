/**
 * Metrics from inside, on the template (issue 17): the environment that turns EMF on, the
 * dashboard and alarms that read the relay's and the API's own metrics, and relay autoscaling on
 * parked sockets and live splices per task with CPU as a guard, at targets derived from measured
 * memory per parked socket and the descriptor limit (infra/constructs/capacity.ts).
 */
import { Match, Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import {
  BYTES_PER_SPLICE,
  PARKED_CAPACITY,
  RELAY_FD_HEADROOM_SHARE,
  RELAY_MAX_CLIENT_SOCKETS,
  RELAY_MEASURED,
  RELAY_NOFILE,
  RELAY_SCALING,
  RELAY_SOCKET_MEMORY_BYTES,
  RELAY_TASK_CPU,
  RELAY_TASK_MEMORY_MIB,
  SPLICE_CAPACITY,
} from '../../infra/constructs/capacity.js';
import { OWN_METRIC_THRESHOLDS } from '../../infra/constructs/observability.js';
import { FD_HEADROOM_SHARE } from '../../relay/capacity.js';
import { DEPLOYMENT_DIMENSION, METRIC, METRICS_NAMESPACE } from '../../server/metrics/catalogue.js';
import { synthApp } from './cdk-app.js';

const app = synthApp({
  regions: 'us-east-1,eu-west-1',
  certificateArn: 'arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555',
  relayDomain: 'relay.{region}.example.com',
});
const stacks = app.stacks.map((s) => ({ name: s.stackName, region: s.region, t: Template.fromStack(s) }));
const { name: STACK, t: owner } = stacks[0] as (typeof stacks)[number];

type Resources = Record<string, { Type: string; Properties: Record<string, unknown> }>;
const resourcesOf = (t: Template, type: string) =>
  Object.entries(t.findResources(type) as Resources).map(([id, r]) => ({ id, ...r }));
/** The relay task definition's container (there is one task definition and one container). */
function relayContainer(t: Template): Record<string, unknown> {
  const [task] = resourcesOf(t, 'AWS::ECS::TaskDefinition');
  if (!task) throw new Error('no task definition');
  return (task.Properties.ContainerDefinitions as Array<Record<string, unknown>>)[0] ?? {};
}

/** The dashboard body as the console gets it: Fn::Join resolved, references as placeholders. */
function dashboardOf(t: Template): { widgets: Array<{ properties: Record<string, unknown> }> } {
  const [d] = resourcesOf(t, 'AWS::CloudWatch::Dashboard');
  const body = d?.Properties.DashboardBody as { 'Fn::Join': [string, unknown[]] } | string;
  const text =
    typeof body === 'string'
      ? body
      : body['Fn::Join'][1].map((p) => (typeof p === 'string' ? p : 'REF')).join('');
  return JSON.parse(text);
}

describe('capacity per relay task, derived from measured figures', () => {
  it('mirrors the relay: its descriptor headroom, and the ceiling where it starts refusing', () => {
    expect(RELAY_FD_HEADROOM_SHARE).toBe(FD_HEADROOM_SHARE);
    // Fargate's largest nofile (2^20): the relay reads it at start and keeps 20% (and 16) of it.
    expect(RELAY_NOFILE).toBe(1_048_576);
    // relay/capacity.ts: Math.floor(fdLimit * (1 - FD_HEADROOM_SHARE)) - 16, with the task's nofile.
    expect(RELAY_MAX_CLIENT_SOCKETS).toBe(Math.floor(1_048_576 * 0.8) - 16);
    expect(RELAY_MAX_CLIENT_SOCKETS).toBe(838_844);
  });

  it('parked sockets: 1,944 MiB left for sockets / 4,000 B each = 509,607 (memory binds); target half, ≥ 200,000 a task', () => {
    expect(RELAY_TASK_MEMORY_MIB).toBe(2048);
    expect(RELAY_MEASURED.bytesPerParkedSocket).toBe(4_000);
    expect(RELAY_SOCKET_MEMORY_BYTES).toBe((2048 - 64 - 40) * 1024 * 1024);
    expect(PARKED_CAPACITY).toEqual({
      value: 509_607,
      byMemory: 509_607,
      byDescriptors: 838_844,
      bound: 'memory',
    });
    expect(RELAY_SCALING.parkedSocketsTarget).toBe(254_803);
    expect(RELAY_SCALING.parkedSocketsTarget).toBeGreaterThanOrEqual(200_000);
    expect(RELAY_SCALING.parkedSocketsAlarm).toBe(407_685);
  });

  it('live splices: two sockets and four 64 KiB stream buffers each, so memory binds at 7,545; target half', () => {
    expect(BYTES_PER_SPLICE).toBe(2 * 4_000 + 4 * 65_536);
    expect(SPLICE_CAPACITY).toEqual({
      value: 7_545,
      byMemory: 7_545,
      byDescriptors: 419_422,
      bound: 'memory',
    });
    expect(RELAY_SCALING.liveSplicesTarget).toBe(3_772);
    expect(RELAY_SCALING.liveSplicesAlarm).toBe(6_036);
  });

  it('a task at both targets at once stays inside its memory and its descriptors', () => {
    const bytes =
      RELAY_MEASURED.baselineRssBytes +
      RELAY_MEASURED.heapGrowthBytes +
      RELAY_SCALING.parkedSocketsTarget * RELAY_MEASURED.bytesPerParkedSocket +
      RELAY_SCALING.liveSplicesTarget * BYTES_PER_SPLICE;
    expect(bytes).toBeLessThan(RELAY_TASK_MEMORY_MIB * 1024 * 1024);
    expect(RELAY_SCALING.parkedSocketsTarget + 2 * RELAY_SCALING.liveSplicesTarget).toBeLessThan(
      RELAY_MAX_CLIENT_SOCKETS,
    );
  });

  it('the task definition has the memory and nofile limit the capacity was derived from', () => {
    const [task] = resourcesOf(owner, 'AWS::ECS::TaskDefinition');
    expect(task?.Properties.Memory).toBe(String(RELAY_TASK_MEMORY_MIB));
    expect(task?.Properties.Cpu).toBe(String(RELAY_TASK_CPU));
    expect(RELAY_TASK_CPU).toBe(1024);
    expect(relayContainer(owner).Ulimits).toEqual([
      { Name: 'nofile', SoftLimit: RELAY_NOFILE, HardLimit: RELAY_NOFILE },
    ]);
  });
});

describe('EMF switched on', () => {
  it.each(stacks.map((s) => [s.region, s] as const))(
    '%s: the relay task and every function publish EMF under the stack name',
    (_region, { name, t }) => {
      const env = relayContainer(t).Environment;
      expect(env).toEqual(
        expect.arrayContaining([
          { Name: 'RENDEZVOUS_METRICS', Value: 'emf' },
          { Name: 'RENDEZVOUS_METRICS_DIMENSION', Value: name },
        ]),
      );
      const functions = resourcesOf(t, 'AWS::Lambda::Function').filter(
        (f) => f.Properties.Handler === 'index.handler',
      );
      expect(functions.map((f) => f.id).sort()).toEqual([
        expect.stringMatching(/Lookup/),
        expect.stringMatching(/Register/),
      ]);
      for (const f of functions)
        expect((f.Properties.Environment as { Variables: Record<string, unknown> }).Variables).toMatchObject({
          RENDEZVOUS_METRICS: 'emf',
          RENDEZVOUS_METRICS_DIMENSION: name,
        });
    },
  );

  it('asks for no CloudWatch permission: EMF rides on the log events the tasks and functions already write', () => {
    const policies = JSON.stringify(resourcesOf(owner, 'AWS::IAM::Policy'));
    expect(policies).not.toContain('cloudwatch:PutMetricData');
  });
});

describe('relay autoscaling', () => {
  const policies = resourcesOf(owner, 'AWS::ApplicationAutoScaling::ScalingPolicy');

  it.each([
    [METRIC.parkedSockets.emf, RELAY_SCALING.parkedSocketsTarget],
    [METRIC.liveSplices.emf, RELAY_SCALING.liveSplicesTarget],
  ])('tracks %s per task (Average of the Deployment-only total) at %i', (MetricName, TargetValue) => {
    owner.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      PolicyType: 'TargetTrackingScaling',
      TargetTrackingScalingPolicyConfiguration: {
        CustomizedMetricSpecification: {
          MetricName,
          Namespace: METRICS_NAMESPACE,
          Dimensions: [{ Name: DEPLOYMENT_DIMENSION, Value: STACK }],
          Statistic: 'Average',
        },
        TargetValue,
        ScaleOutCooldown: 60,
        ScaleInCooldown: 600,
      },
    });
  });

  it('keeps CPU as a guard, and has no NLB-wide flow step scaling any more', () => {
    owner.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      PolicyType: 'TargetTrackingScaling',
      TargetTrackingScalingPolicyConfiguration: Match.objectLike({
        PredefinedMetricSpecification: { PredefinedMetricType: 'ECSServiceAverageCPUUtilization' },
        TargetValue: RELAY_SCALING.cpuTargetPercent,
      }),
    });
    expect(policies.map((p) => p.Properties.PolicyType)).toEqual([
      'TargetTrackingScaling',
      'TargetTrackingScaling',
      'TargetTrackingScaling',
    ]);
    expect(JSON.stringify(resourcesOf(owner, 'AWS::CloudWatch::Alarm'))).not.toContain('ActiveFlowCount');
  });
});

describe('alarms on the metrics from inside', () => {
  const alarms = resourcesOf(owner, 'AWS::CloudWatch::Alarm');
  const byName = (name: string) => {
    const a = alarms.find((x) => x.Properties.AlarmName === `rendezvous.us-east-1.${name}`);
    if (!a) throw new Error(`no alarm ${name}`);
    return a.Properties;
  };
  const notifies = { AlarmActions: [{ Ref: expect.stringMatching(/AlarmTopic/) }] };
  const dims = (extra: Array<{ Name: string; Value: string }> = []) => [
    { Name: DEPLOYMENT_DIMENSION, Value: STACK },
    ...extra,
  ];

  it('relay auth refusals (brute force): unknown cookies, bad and missing codes, summed, ≥ 100 in 5 minutes', () => {
    const a = byName('RelayAuthRefusals') as { Metrics: Array<Record<string, unknown>> };
    expect(a).toMatchObject({
      ...notifies,
      Threshold: OWN_METRIC_THRESHOLDS.relayAuthRefusals,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      EvaluationPeriods: 1,
      TreatMissingData: 'notBreaching',
    });
    expect(OWN_METRIC_THRESHOLDS.relayAuthRefusals).toBe(100);
    const stats = a.Metrics.filter((m) => m.MetricStat).map((m) => m.MetricStat);
    expect(stats).toEqual(
      ['unknown_cookie', 'bad_code', 'missing_response'].map((reason) => ({
        Metric: {
          Namespace: METRICS_NAMESPACE,
          MetricName: METRIC.relayRefusals.emf,
          Dimensions: dims([{ Name: 'Reason', Value: reason }]),
        },
        Period: 300,
        Stat: 'Sum',
      })),
    );
    const [expr] = a.Metrics.filter((m) => m.Expression);
    expect(expr).toMatchObject({
      Expression: 'FILL(auth0, 0) + FILL(auth1, 0) + FILL(auth2, 0)',
      ReturnData: true,
    });
  });

  it('relay capacity refusals: any at_capacity two 5-minute periods running', () => {
    const a = byName('RelayCapacityRefusals') as { Metrics: Array<{ MetricStat?: unknown }> };
    expect(a).toMatchObject({
      ...notifies,
      Threshold: 1,
      EvaluationPeriods: 2,
      TreatMissingData: 'notBreaching',
    });
    expect(a.Metrics.find((m) => m.MetricStat)?.MetricStat).toMatchObject({
      Metric: {
        MetricName: 'Refusals',
        Namespace: 'Rendezvous',
        Dimensions: dims([{ Name: 'Reason', Value: 'at_capacity' }]),
      },
    });
  });

  it.each([
    ['RelayParkedSocketsHigh', METRIC.parkedSockets.emf, RELAY_SCALING.parkedSocketsAlarm],
    ['RelayLiveSplicesHigh', METRIC.liveSplices.emf, RELAY_SCALING.liveSplicesAlarm],
  ])('%s: the hottest task (Maximum) at 0.8 of its capacity for 5 minutes', (name, MetricName, Threshold) => {
    expect(byName(name)).toMatchObject({
      ...notifies,
      Namespace: METRICS_NAMESPACE,
      MetricName,
      Dimensions: dims(),
      Statistic: 'Maximum',
      Period: 60,
      EvaluationPeriods: 5,
      Threshold,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      TreatMissingData: 'notBreaching',
    });
  });

  it('API auth failures: ApiRefusals with reason auth_failed ≥ 50 in 5 minutes', () => {
    expect(byName('ApiAuthFailures')).toMatchObject({
      ...notifies,
      Namespace: METRICS_NAMESPACE,
      MetricName: METRIC.apiRefusals.emf,
      Dimensions: dims([{ Name: 'Reason', Value: 'auth_failed' }]),
      Statistic: 'Sum',
      Period: 300,
      EvaluationPeriods: 1,
      Threshold: 50,
      TreatMissingData: 'notBreaching',
    });
  });

  it('every alarm on the Rendezvous namespace is named with the region prefix the pipeline gate lists', () => {
    const own = alarms.filter((a) => JSON.stringify(a.Properties).includes(`"${METRICS_NAMESPACE}"`));
    expect(own.map((a) => a.Properties.AlarmName).sort()).toEqual(
      [
        'ApiAuthFailures',
        'RelayAuthRefusals',
        'RelayCapacityRefusals',
        'RelayLiveSplicesHigh',
        'RelayParkedSocketsHigh',
      ].map((n) => `rendezvous.us-east-1.${n}`),
    );
    // The other region's alarms carry its own prefix and its own stack's Deployment.
    const other = stacks[1] as (typeof stacks)[number];
    const names = resourcesOf(other.t, 'AWS::CloudWatch::Alarm').map((a) => a.Properties.AlarmName);
    expect(names).toContain('rendezvous.eu-west-1.RelayAuthRefusals');
    expect(JSON.stringify(other.t.toJSON())).not.toContain(`"Value":"${STACK}"`);
  });
});

describe('dashboard', () => {
  const widgets = dashboardOf(owner).widgets;
  const series = widgets.flatMap((w) => (w.properties.metrics ?? []) as unknown[][]);
  /** Metric rows: [namespace, name, dim, value, dim, value, …, {options}]. */
  const rows = series.filter((r) => r[0] === METRICS_NAMESPACE);
  const dimsOf = (r: unknown[]) => {
    const parts = r.filter((x) => typeof x === 'string').slice(2) as string[];
    return Object.fromEntries(parts.flatMap((_, i) => (i % 2 ? [] : [[parts[i], parts[i + 1]]])));
  };
  const expressions = series
    .map((r) => (r[0] as { expression?: string } | undefined)?.expression)
    .filter((e): e is string => typeof e === 'string');

  it('graphs every relay and API metric of the catalogue in namespace Rendezvous, with this stack as Deployment', () => {
    const names = new Set(rows.map((r) => r[1]));
    for (const def of Object.values(METRIC)) expect(names).toContain(def.emf);
    for (const r of rows) expect(dimsOf(r)[DEPLOYMENT_DIMENSION]).toBe(STACK);
  });

  it('parked sockets per task (average and hottest) and by protocol; pairings by path local and peer', () => {
    const parked = rows.filter((r) => r[1] === 'ParkedSockets');
    // The dashboard leaves out the default statistic (Average).
    const stats = parked.map((r) => (r.at(-1) as { stat?: string }).stat ?? 'Average');
    expect(stats).toEqual(expect.arrayContaining(['Average', 'Maximum', 'Sum']));
    expect(parked.map((r) => dimsOf(r).Protocol).filter(Boolean)).toEqual(['generic', 'http']);
    const paths = rows.filter((r) => r[1] === 'Pairings').map((r) => dimsOf(r).Path);
    expect([...new Set(paths)].sort()).toEqual(['local', 'peer']);
  });

  it('handshake time p50 and p99, peer-link latency p99', () => {
    const stat = (name: string) =>
      rows.filter((r) => r[1] === name).map((r) => (r.at(-1) as { stat: string }).stat);
    expect(stat('HandshakeTime')).toEqual(['p50', 'p99']);
    expect(stat('PeerLinkLatency')).toEqual(['p99']);
  });

  it('refusals by reason (relay and API) with SEARCH, so a new reason needs no deploy', () => {
    for (const name of ['Refusals', 'ApiRefusals'])
      expect(expressions).toContain(
        `SEARCH('{Rendezvous,Deployment,Reason} MetricName="${name}" Deployment="${STACK}"', 'Sum', 60)`,
      );
  });

  it('marks the scaling target and the alarm on the parked-socket and splice graphs', () => {
    const annotated = widgets
      .map((w) => w.properties.annotations as { horizontal?: Array<{ value: number }> } | undefined)
      .flatMap((a) => a?.horizontal?.map((h) => h.value) ?? []);
    expect(annotated).toEqual(
      expect.arrayContaining([
        RELAY_SCALING.parkedSocketsTarget,
        RELAY_SCALING.parkedSocketsAlarm,
        RELAY_SCALING.liveSplicesTarget,
        RELAY_SCALING.liveSplicesAlarm,
      ]),
    );
  });
});
