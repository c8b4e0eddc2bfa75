/**
 * One name for users, per region (with a hosted zone in context):
 *
 * - `api.<zone>`: a regional custom domain for this region's API, and a latency record with this
 *   region as its `setIdentifier`, so a client resolves the nearest region whose health check
 *   passes. Route 53 answers with another region's record while this one's check fails.
 * - the relay's own name (`relay-<region>.<zone>`) and `*.<that name>` (host-based routing of the
 *   HTTP-specific protocol, `<id>.relay-<region>.<zone>`), aliases to this region's NLB. A relay
 *   name is per region on purpose: a registration names the relay that parked the server.
 *
 * The health check combines what a client would notice: the API endpoint answers TCP on 443, its
 * 5xx alarm is quiet, and at least one relay is healthy behind the generic listener (an API that
 * registers hidden servers onto a dead relay is no use). HTTPS checks need a 2xx answer, and the
 * API has no request that answers 2xx without an identity, so the API's own alarm stands in for
 * the "answers correctly" half.
 */
import { CfnOutput, Duration, Stack } from 'aws-cdk-lib';
import { ApiMapping, DomainName } from 'aws-cdk-lib/aws-apigatewayv2';
import type { ICertificate } from 'aws-cdk-lib/aws-certificatemanager';
import type { Alarm } from 'aws-cdk-lib/aws-cloudwatch';
import {
  ARecord,
  HealthCheck,
  HealthCheckType,
  type IHostedZone,
  InsufficientDataHealthStatusEnum,
  RecordTarget,
} from 'aws-cdk-lib/aws-route53';
import { ApiGatewayv2DomainProperties, LoadBalancerTarget } from 'aws-cdk-lib/aws-route53-targets';
import { Construct } from 'constructs';
import type { RegistrationApi } from './registration-api.js';
import type { RelayService } from './relay-service.js';

/** Props of a region's names. */
export interface RegionalNamesProps {
  zone: IHostedZone;
  /** The one API name (`api.<zone>`), the same in every region. */
  apiDomain: string;
  /** This region's certificate: it names `apiDomain` (and the relay names). */
  certificate: ICertificate;
  api: RegistrationApi;
  relay: RelayService;
  /** This region's relay name, when it is inside the zone (a record is made for it). */
  relayDomain?: string;
  /** Alarms whose ALARM state takes this region out of `apiDomain`'s answers. */
  healthAlarms: Alarm[];
}

/** The custom domain, latency record, health checks and relay records of one region. */
export class RegionalNames extends Construct {
  readonly domain: DomainName;
  /** The combined health check behind the latency record. */
  readonly healthCheck: HealthCheck;
  readonly apiRecord: ARecord;
  /** The relay's own name and its wildcard, when made here. */
  readonly relayRecords: ARecord[] = [];

  constructor(scope: Construct, id: string, props: RegionalNamesProps) {
    super(scope, id);
    const region = Stack.of(this).region;
    // Regional endpoint (the default): each region terminates TLS for the same name itself.
    this.domain = new DomainName(this, 'ApiDomain', {
      domainName: props.apiDomain,
      certificate: props.certificate,
    });
    new ApiMapping(this, 'ApiMapping', {
      api: props.api.api,
      domainName: this.domain,
      stage: props.api.stage,
    });

    const children = [
      new HealthCheck(this, 'ApiReachable', {
        type: HealthCheckType.TCP,
        fqdn: `${props.api.api.apiId}.execute-api.${region}.${Stack.of(this).urlSuffix}`,
        port: 443,
        requestInterval: Duration.seconds(30),
        failureThreshold: 3,
      }),
      ...props.healthAlarms.map(
        (alarm, i) =>
          new HealthCheck(this, `Alarm${i}`, {
            type: HealthCheckType.CLOUDWATCH_METRIC,
            alarmIdentifier: { region, name: alarm.alarmName },
            // A new region's alarms start without data: keep the last verdict (healthy at first).
            insufficientDataHealthStatus: InsufficientDataHealthStatusEnum.LAST_KNOWN_STATUS,
          }),
      ),
    ];
    this.healthCheck = new HealthCheck(this, 'Healthy', {
      type: HealthCheckType.CALCULATED,
      childHealthChecks: children,
      healthThreshold: children.length,
    });

    this.apiRecord = new ARecord(this, 'ApiLatency', {
      zone: props.zone,
      recordName: props.apiDomain,
      target: RecordTarget.fromAlias(
        new ApiGatewayv2DomainProperties(this.domain.regionalDomainName, this.domain.regionalHostedZoneId),
      ),
      region,
      setIdentifier: region,
      healthCheck: this.healthCheck,
    });

    if (props.relayDomain) {
      const target = RecordTarget.fromAlias(new LoadBalancerTarget(props.relay.nlb));
      this.relayRecords.push(
        new ARecord(this, 'RelayName', { zone: props.zone, recordName: props.relayDomain, target }),
        new ARecord(this, 'RelayWildcard', {
          zone: props.zone,
          recordName: `*.${props.relayDomain}`,
          target,
        }),
      );
    }

    new CfnOutput(this, 'GlobalApiUrl', {
      value: `https://${props.apiDomain}`,
      description: 'RENDEZVOUS_API for every region: the nearest healthy one answers',
    });
  }
}
