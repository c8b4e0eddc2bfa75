/**
 * Alarms and one dashboard for a region: API 5xx, Lambda errors and throttles, per relay target
 * group (generic, generic over TLS, HTTP-specific) "no healthy relay" and unhealthy targets,
 * relay CPU, DynamoDB throttling. Alarms notify an SNS topic encrypted with a customer-managed
 * key whose policy lets CloudWatch use it (an `alias/aws/sns` topic silently drops alarm
 * notifications: CloudWatch cannot use that AWS-managed key), and an e-mail address when given.
 *
 * Every alarm is named `<alarmPrefix><name>` (`rendezvous.<region>.` from the stack), so the
 * pipeline's alarm gate lists exactly this region's alarms by prefix (CloudFormation's generated
 * names, such as the autoscaling alarms', start with the stack name and never match). The
 * "unhealthy relay" alarms are also the relay service's ECS deployment alarms: a release whose
 * tasks fail /healthz rolls back to the previous task definition by itself.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import {
  Alarm,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  type IMetric,
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
import type { RegistrationApi } from './registration-api.js';
import type { RelayService } from './relay-service.js';

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
      this.alarms.push(a);
      this.byName[name] = a;
      return a;
    };
    const { api, relay } = props;
    // The canaries' rollback alarms live with their functions; they notify here too.
    for (const f of [api.register, api.lookup]) f.canaryAlarm.addAlarmAction(new SnsAction(this.topic));
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
      ],
    });
  }
}
