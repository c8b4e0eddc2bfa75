/**
 * Alarms and one dashboard for a region: API 5xx, Lambda errors and throttles, unhealthy relay
 * targets, relay CPU. Alarms notify an encrypted SNS topic (and an e-mail address when given).
 */
import { Duration } from 'aws-cdk-lib';
import {
  Alarm,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  type IMetric,
  TreatMissingData,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import { Alias } from 'aws-cdk-lib/aws-kms';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { EmailSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import type { RegistrationApi } from './registration-api.js';
import type { RelayService } from './relay-service.js';

/** Props of the observability construct. */
export interface ObservabilityProps {
  api: RegistrationApi;
  relay: RelayService;
  alarmEmail?: string;
}

/** Alarms, their topic, and the dashboard. */
export class Observability extends Construct {
  readonly topic: Topic;
  readonly alarms: Alarm[] = [];
  readonly dashboard: Dashboard;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    this.topic = new Topic(this, 'AlarmTopic', {
      enforceSSL: true,
      masterKey: Alias.fromAliasName(this, 'SnsKey', 'alias/aws/sns'),
    });
    if (props.alarmEmail) this.topic.addSubscription(new EmailSubscription(props.alarmEmail));
    const five = Duration.minutes(5);
    const alarm = (
      name: string,
      metric: IMetric,
      threshold: number,
      evaluationPeriods: number,
      description: string,
    ) => {
      const a = new Alarm(this, name, {
        metric,
        threshold,
        evaluationPeriods,
        comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: TreatMissingData.NOT_BREACHING,
        alarmDescription: description,
      });
      a.addAlarmAction(new SnsAction(this.topic));
      this.alarms.push(a);
      return a;
    };
    const { api, relay } = props;
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
    alarm(
      'UnhealthyRelays',
      relay.genericTargets.metrics.unHealthyHostCount({ period: Duration.minutes(1), statistic: 'Maximum' }),
      1,
      3,
      'a relay task fails its /healthz check',
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
