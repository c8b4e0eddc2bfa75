/**
 * Alarms and one dashboard for a region: API 5xx, Lambda errors and throttles, per relay target
 * group (generic, generic over TLS, HTTP-specific) "no healthy relay" and unhealthy targets,
 * relay CPU, DynamoDB throttling; and, from the metrics the relay and the API publish themselves
 * (EMF, server/metrics/, namespace Rendezvous, dimension Deployment = the stack name): relay
 * authentication refusals (brute force), capacity refusals, the hottest task's parked sockets and
 * live splices against its capacity (capacity.ts), and API authentication failures. Alarms
 * notify an SNS topic encrypted with a customer-managed key whose policy lets CloudWatch use it
 * (an `alias/aws/sns` topic silently drops alarm notifications: CloudWatch cannot use that
 * AWS-managed key) and whose topic policy lets this account's CloudWatch alarms publish, over TLS
 * only, and an e-mail address when given. Every alarm notifies when it fires and when it clears.
 *
 * Every alarm is named `<alarmPrefix><name>` (`rendezvous.<region>.` from the stack), so the
 * pipeline's alarm gate lists exactly this region's alarms by prefix (CloudFormation's generated
 * names, such as the autoscaling alarms', start with the stack name and never match). The
 * "unhealthy relay" alarms are also the relay service's ECS deployment alarms: a release whose
 * tasks fail /healthz rolls back to the previous task definition by itself.
 */
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import {
  Alarm,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  type IMetric,
  MathExpression,
  Metric,
  TreatMissingData,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import { AlarmBehavior } from 'aws-cdk-lib/aws-ecs';
import { PolicyStatement, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Key } from 'aws-cdk-lib/aws-kms';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { EmailSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import {
  DEPLOYMENT_DIMENSION,
  emfDimension,
  METRIC,
  METRICS_NAMESPACE,
  type MetricDef,
} from '../../server/metrics/catalogue.js';
import { PARKED_CAPACITY, RELAY_SCALING, SPLICE_CAPACITY } from './capacity.js';
import type { RegistrationApi } from './registration-api.js';
import type { RelayService } from './relay-service.js';

/**
 * Relay refusal reasons that mean someone is guessing: a cookie the relay does not know, a wrong
 * or missing CONNECT code. Stable label values (the brief for issue 17; relay/ owns the list).
 */
export const RELAY_AUTH_REFUSALS = ['unknown_cookie', 'bad_code', 'missing_response'] as const;
/** Relay refusal reasons that mean a task is full (users are turned away, not attackers). */
export const RELAY_CAPACITY_REFUSALS = ['at_capacity'] as const;

/** Alarm thresholds on the metrics from inside, per 5 minutes unless said otherwise. */
export const OWN_METRIC_THRESHOLDS = {
  /** Relay auth refusals (all tasks): a client with a stale cookie makes a few, a guesser hundreds. */
  relayAuthRefusals: 100,
  /** Relay capacity refusals: any, two 5-minute periods running (one burst while scaling out is not news). */
  relayCapacityRefusals: 1,
  /** API auth_failed refusals: the API locks a uuid out after a few, so 50 means many uuids or sources. */
  apiAuthFailures: 50,
} as const;

/** Props of the observability construct. */
export interface ObservabilityProps {
  api: RegistrationApi;
  relay: RelayService;
  /** The state table's name (its local replica is alarmed on throttling). */
  tableName: string;
  /** Prefix of every alarm name (see the module comment). */
  alarmPrefix: string;
  alarmEmail?: string;
}

/** Alarms, their topic, and the dashboard. */
export class Observability extends Construct {
  readonly topic: Topic;
  /** The topic's customer-managed key. */
  readonly key: Key;
  readonly alarms: Alarm[] = [];
  /** Alarms by short name (e.g. `Api5xx`, `NoHealthyRelayGeneric`). */
  readonly byName: Record<string, Alarm> = {};
  readonly dashboard: Dashboard;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    this.key = new Key(this, 'AlarmKey', {
      description: 'rendezvous alarm topic encryption (CloudWatch alarms may use it)',
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.DESTROY,
      pendingWindow: Duration.days(7),
    });
    // As AWS documents for SNS topics that AWS services publish to: the service principal may
    // generate and decrypt data keys. Who may publish is still the topic policy's decision
    // (this account only), so the grant lets no one else reach the topic.
    this.key.addToResourcePolicy(
      new PolicyStatement({
        sid: 'AllowCloudWatchAlarmsToUseTheKey',
        principals: [new ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
      }),
    );
    this.topic = new Topic(this, 'AlarmTopic', { enforceSSL: true, masterKey: this.key });
    // A topic policy replaces SNS's default one (which let this account's principals publish), and
    // enforceSSL writes one holding only its Deny: without this Allow, CloudWatch is refused and
    // alarm e-mails never arrive. Only this account's alarms (aws:SourceAccount) may publish.
    this.topic.addToResourcePolicy(
      new PolicyStatement({
        sid: 'AllowCloudWatchAlarmsToPublish',
        principals: [new ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.topic.topicArn],
        conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } },
      }),
    );
    if (props.alarmEmail) this.topic.addSubscription(new EmailSubscription(props.alarmEmail));
    const five = Duration.minutes(5);
    const alarm = (
      name: string,
      metric: IMetric,
      threshold: number,
      evaluationPeriods: number,
      description: string,
      how: { comparison?: ComparisonOperator; missing?: TreatMissingData } = {},
    ) => {
      const a = new Alarm(this, name, {
        alarmName: `${props.alarmPrefix}${name}`,
        metric,
        threshold,
        evaluationPeriods,
        comparisonOperator: how.comparison ?? ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: how.missing ?? TreatMissingData.NOT_BREACHING,
        alarmDescription: description,
      });
      a.addAlarmAction(new SnsAction(this.topic));
      // And when it clears: an operator paged at night learns it is over without a console.
      a.addOkAction(new SnsAction(this.topic));
      this.alarms.push(a);
      this.byName[name] = a;
      return a;
    };
    const { api, relay } = props;
    // The canaries' rollback alarms live with their functions; they notify here too.
    for (const f of [api.register, api.lookup]) {
      f.canaryAlarm.addAlarmAction(new SnsAction(this.topic));
      f.canaryAlarm.addOkAction(new SnsAction(this.topic));
    }
    alarm(
      'Api5xx',
      api.api.metricServerError({ period: five, statistic: 'Sum' }),
      5,
      1,
      'registration API answered 5xx',
    );
    for (const [name, f] of [
      ['Register', api.register.fn],
      ['Lookup', api.lookup.fn],
    ] as const) {
      alarm(
        `${name}Errors`,
        f.metricErrors({ period: five, statistic: 'Sum' }),
        1,
        1,
        `${name} function errors`,
      );
      alarm(
        `${name}Throttles`,
        f.metricThrottles({ period: five, statistic: 'Sum' }),
        1,
        1,
        `${name} function throttled`,
      );
    }
    const minute = Duration.minutes(1);
    for (const { name, group } of relay.targetGroups) {
      // An empty target group publishes no HealthyHostCount at all: missing data is breaching,
      // so "no task registered" alarms like "no task healthy".
      alarm(
        `NoHealthyRelay${name}`,
        group.metrics.healthyHostCount({ period: minute, statistic: 'Minimum' }),
        1,
        3,
        `no healthy relay behind the ${name} listener`,
        { comparison: ComparisonOperator.LESS_THAN_THRESHOLD, missing: TreatMissingData.BREACHING },
      );
      alarm(
        `UnhealthyRelays${name}`,
        group.metrics.unHealthyHostCount({ period: minute, statistic: 'Maximum' }),
        1,
        3,
        `a relay task behind the ${name} listener fails its /healthz check`,
      );
    }
    // A relay release whose tasks fail their health checks rolls back without a human (the
    // circuit breaker covers tasks that never start). By name: these alarms depend on the target
    // groups only, never on the service, so naming them creates no dependency cycle.
    const deploymentAlarms = relay.targetGroups.map(
      ({ name }) => this.byName[`UnhealthyRelays${name}`] as Alarm,
    );
    // Literal names (the alarms are named above), not Refs, which CDK warns may form a cycle.
    relay.service.enableDeploymentAlarms(
      relay.targetGroups.map(({ name }) => `${props.alarmPrefix}UnhealthyRelays${name}`),
      { behavior: AlarmBehavior.ROLLBACK_ON_ALARM },
    );
    // Created before the service, so a first deploy never names an alarm that does not exist yet.
    relay.service.node.addDependency(...deploymentAlarms);
    for (const metricName of ['ReadThrottleEvents', 'WriteThrottleEvents'])
      alarm(
        `Table${metricName}`,
        new Metric({
          namespace: 'AWS/DynamoDB',
          metricName,
          dimensionsMap: { TableName: props.tableName },
          period: five,
          statistic: 'Sum',
        }),
        1,
        1,
        `DynamoDB throttled the state table (${metricName})`,
      );
    alarm(
      'RelayCpu',
      relay.service.metricCpuUtilization({ period: five, statistic: 'Average' }),
      80,
      3,
      'relay CPU above 80% (autoscaling should have added tasks)',
    );

    // Metrics from inside (EMF): one Metric per catalogue entry, always in this deployment.
    const deployment = Stack.of(this).stackName;
    const own = (
      def: MetricDef,
      statistic: string,
      period: Duration,
      labels: Record<string, string> = {},
      label?: string,
    ) =>
      new Metric({
        namespace: METRICS_NAMESPACE,
        metricName: def.emf,
        dimensionsMap: {
          [DEPLOYMENT_DIMENSION]: deployment,
          ...Object.fromEntries(Object.entries(labels).map(([k, v]) => [emfDimension(k), v])),
        },
        statistic,
        period,
        label,
      });
    // Sums of a closed set of labelled series (a refusal reason each). A math expression over
    // exact series, not SEARCH, because alarms cannot use SEARCH; FILL(…, 0): a reason that did
    // not happen writes nothing (counters with nothing new are left out of EMF).
    const sumOf = (def: MetricDef, label: string, values: readonly string[], id: string) =>
      new MathExpression({
        expression: values.map((_, i) => `FILL(${id}${i}, 0)`).join(' + '),
        usingMetrics: Object.fromEntries(
          values.map((v, i) => [`${id}${i}`, own(def, 'Sum', five, { [label]: v })]),
        ),
        period: five,
        label: `${def.emf} (${values.join(', ')})`,
      });
    // Counters write nothing in a quiet minute: missing data is "nothing happened".
    alarm(
      'RelayAuthRefusals',
      sumOf(METRIC.relayRefusals, 'reason', RELAY_AUTH_REFUSALS, 'auth'),
      OWN_METRIC_THRESHOLDS.relayAuthRefusals,
      1,
      `relay refused ≥ ${OWN_METRIC_THRESHOLDS.relayAuthRefusals} connections in 5 minutes for ${RELAY_AUTH_REFUSALS.join(', ')}: someone is guessing cookies or codes (the refusal log names the source)`,
    );
    alarm(
      'RelayCapacityRefusals',
      sumOf(METRIC.relayRefusals, 'reason', RELAY_CAPACITY_REFUSALS, 'full'),
      OWN_METRIC_THRESHOLDS.relayCapacityRefusals,
      2,
      'relay tasks refused connections at their descriptor ceiling (at_capacity) in two 5-minute periods running: autoscaling is not keeping up (at its maximum task count?)',
    );
    // The hottest task (Maximum of the per-task totals), which an average hides: a scale-out only
    // spreads new parks, so one task can stay full while the average looks fine.
    alarm(
      'RelayParkedSocketsHigh',
      own(METRIC.parkedSockets, 'Maximum', minute),
      RELAY_SCALING.parkedSocketsAlarm,
      5,
      `a relay task holds ≥ ${RELAY_SCALING.parkedSocketsAlarm} parked sockets (80% of its ${PARKED_CAPACITY.value}, bound by ${PARKED_CAPACITY.bound}) for 5 minutes`,
    );
    alarm(
      'RelayLiveSplicesHigh',
      own(METRIC.liveSplices, 'Maximum', minute),
      RELAY_SCALING.liveSplicesAlarm,
      5,
      `a relay task holds ≥ ${RELAY_SCALING.liveSplicesAlarm} live splices (80% of its ${SPLICE_CAPACITY.value}, bound by ${SPLICE_CAPACITY.bound}) for 5 minutes`,
    );
    alarm(
      'ApiAuthFailures',
      own(METRIC.apiRefusals, 'Sum', five, { reason: 'auth_failed' }),
      OWN_METRIC_THRESHOLDS.apiAuthFailures,
      1,
      `the API refused ≥ ${OWN_METRIC_THRESHOLDS.apiAuthFailures} registrations in 5 minutes for a wrong code (auth_failed): brute force across uuids or sources (the refusal log names them)`,
    );

    // Open label sets (refusal reasons, lookup outcomes, byte directions) are graphed with SEARCH,
    // so a reason added later shows up without a deploy.
    const search = (def: MetricDef, label: string, statistic: string, title: string) =>
      new MathExpression({
        expression: `SEARCH('{${METRICS_NAMESPACE},${DEPLOYMENT_DIMENSION},${emfDimension(label)}} MetricName="${def.emf}" ${DEPLOYMENT_DIMENSION}="${deployment}"', '${statistic}', 60)`,
        usingMetrics: {},
        period: minute,
        label: title,
      });
    const protocols = ['generic', 'http'];
    const paths = ['local', 'peer'];

    this.dashboard = new Dashboard(this, 'Dashboard', {
      widgets: [
        [
          new GraphWidget({
            title: 'Registration API',
            left: [api.api.metricCount({ period: Duration.minutes(1) })],
            right: [
              api.api.metricClientError({ period: Duration.minutes(1) }),
              api.api.metricServerError({ period: Duration.minutes(1) }),
            ],
          }),
          new GraphWidget({
            title: 'Functions',
            left: [api.register.fn.metricInvocations(), api.lookup.fn.metricInvocations()],
            right: [
              api.register.fn.metricErrors(),
              api.lookup.fn.metricErrors(),
              api.register.fn.metricDuration(),
            ],
          }),
        ],
        [
          new GraphWidget({
            title: 'Relay flows',
            left: [relay.nlb.metrics.activeFlowCount(), relay.nlb.metrics.newFlowCount()],
            right: [
              relay.genericTargets.metrics.healthyHostCount(),
              relay.genericTargets.metrics.unHealthyHostCount(),
            ],
          }),
          new GraphWidget({
            title: 'Relay tasks',
            left: [relay.service.metricCpuUtilization(), relay.service.metricMemoryUtilization()],
          }),
        ],
        [
          new GraphWidget({
            title: 'Parked sockets (per task: average, hottest; all tasks)',
            left: [
              own(METRIC.parkedSockets, 'Average', minute, {}, 'per task (average)'),
              own(METRIC.parkedSockets, 'Maximum', minute, {}, 'hottest task'),
            ],
            right: [own(METRIC.parkedSockets, 'Sum', minute, {}, 'all tasks')],
            leftAnnotations: [
              { value: RELAY_SCALING.parkedSocketsTarget, label: 'scaling target' },
              { value: RELAY_SCALING.parkedSocketsAlarm, label: 'alarm' },
            ],
          }),
          new GraphWidget({
            title: 'Parked sockets by protocol (all tasks)',
            left: protocols.map((p) => own(METRIC.parkedSockets, 'Sum', minute, { protocol: p }, p)),
          }),
          new GraphWidget({
            title: 'Live splices (per task: average, hottest; all tasks)',
            left: [
              own(METRIC.liveSplices, 'Average', minute, {}, 'per task (average)'),
              own(METRIC.liveSplices, 'Maximum', minute, {}, 'hottest task'),
            ],
            right: [own(METRIC.liveSplices, 'Sum', minute, {}, 'all tasks')],
            leftAnnotations: [
              { value: RELAY_SCALING.liveSplicesTarget, label: 'scaling target' },
              { value: RELAY_SCALING.liveSplicesAlarm, label: 'alarm' },
            ],
          }),
        ],
        [
          new GraphWidget({
            title: 'Pairings by path (local, via a peer) and protocol',
            left: paths.flatMap((path) =>
              protocols.map((protocol) =>
                own(METRIC.pairings, 'Sum', minute, { protocol, path }, `${path} ${protocol}`),
              ),
            ),
            stacked: true,
          }),
          new GraphWidget({
            title: 'Bytes relayed',
            left: [own(METRIC.rendezvousBytes, 'Sum', minute, {}, 'all')],
            right: [search(METRIC.rendezvousBytes, 'direction', 'Sum', 'by direction')],
          }),
          new GraphWidget({
            title: 'Handshake time and peer-link latency (ms)',
            left: [
              own(METRIC.handshakeTime, 'p50', minute, {}, 'handshake p50'),
              own(METRIC.handshakeTime, 'p99', minute, {}, 'handshake p99'),
            ],
            right: [own(METRIC.peerLinkLatency, 'p99', minute, {}, 'peer link p99')],
          }),
          new GraphWidget({
            title: 'Relay refusals by reason',
            left: [search(METRIC.relayRefusals, 'reason', 'Sum', 'refusals')],
            right: [own(METRIC.relayRefusals, 'Sum', minute, {}, 'all reasons')],
          }),
        ],
        [
          new GraphWidget({
            title: 'API registrations and look-ups',
            left: [
              own(METRIC.registrations, 'Sum', minute, {}, 'registrations'),
              own(METRIC.lookups, 'Sum', minute, {}, 'look-ups'),
            ],
            right: [search(METRIC.lookups, 'outcome', 'Sum', 'look-ups by outcome')],
          }),
          new GraphWidget({
            title: 'API refusals by reason',
            left: [search(METRIC.apiRefusals, 'reason', 'Sum', 'refusals')],
            right: [own(METRIC.apiRefusals, 'Sum', minute, {}, 'all reasons')],
          }),
        ],
      ],
    });
  }
}
