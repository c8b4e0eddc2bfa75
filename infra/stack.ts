/**
 * One region of the service: registration API, relay service, observability, over the local
 * replica of the state table (created by the table stack, which this stack depends on), and,
 * with a hosted zone, the region's names (custom API domain, latency record, relay records).
 */
import { CfnOutput, Fn, Stack, type StackProps } from 'aws-cdk-lib';
import { Certificate, CertificateValidation, type ICertificate } from 'aws-cdk-lib/aws-certificatemanager';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { HostedZone } from 'aws-cdk-lib/aws-route53';
import { NagSuppressions } from 'cdk-nag';
import type { Construct } from 'constructs';
import { RegionalNames } from './constructs/names.js';
import { Observability } from './constructs/observability.js';
import { RegistrationApi } from './constructs/registration-api.js';
import { RelayService } from './constructs/relay-service.js';
import { StateTable } from './constructs/state-table.js';

/** Everything a region's stack is told by the app. */
export interface RendezvousStackProps extends StackProps {
  tableName: string;
  relayPort: number;
  /** Generic protocol over TLS (with a certificate). */
  relayTlsPort?: number;
  /** Plain HTTP-specific listener (without a certificate). */
  relayHttpPort?: number;
  relayDesiredCount: number;
  relayArchitecture: 'x86_64' | 'arm64';
  certificateArn?: string;
  /** This region's own relay name. */
  relayDomain?: string;
  alarmEmail?: string;
  nodeImage?: string;
  /**
   * Where one-time codes are claimed as deployed (`claimsRegion`, default the table's home, the
   * first of `regions`); an operator moves it at run time (`rendezvous claims-region`).
   */
  homeRegion?: string;
  /** Every region with a replica: functions and relays may use each (a claims move needs no redeploy). */
  tableRegions?: string[];
  /** Users' hosted zone: with it, the API's custom domain, latency record and relay records. */
  zone?: { hostedZoneId: string; zoneName: string };
  /** The one API name (with `zone`). */
  apiDomain?: string;
  /** NAT gateways in the relay VPC (default 2, one per AZ). */
  natGateways?: 1 | 2;
  /** Reserved concurrency of each registration function (undefined: none). */
  reservedConcurrency?: number;
  /** Direct addressing: public task IPs, look-ups name the holding task (docs/deploy.md). */
  relayDirect?: boolean;
}

/** This region's alarm-name prefix: the pipeline's alarm gate lists alarms by it. */
export function alarmPrefixOf(region: string): string {
  return `rendezvous.${region}.`;
}

/** The rendezvous service in one region. */
export class RendezvousStack extends Stack {
  readonly table: StateTable;
  readonly api: RegistrationApi;
  readonly relay: RelayService;
  readonly observability: Observability;
  /** Prefix of this region's alarm names. */
  readonly alarmPrefix: string;
  /** The region's names, with a hosted zone. */
  readonly names?: RegionalNames;

  /**
   * The region's first two zones, never looked up at synth: with an account in the environment
   * (the pipeline always has one) CDK would otherwise ask EC2, which needs credentials. A zone
   * list already cached in the context (cdk.context.json, from an earlier synth with credentials)
   * is kept, so stacks deployed that way keep their subnets; otherwise CloudFormation resolves
   * them (Fn::GetAZs). Zone names differ per account, so none is written literally.
   */
  override get availabilityZones(): string[] {
    const cached = this.node.tryGetContext(
      `availability-zones:account=${this.account}:region=${this.region}`,
    );
    if (Array.isArray(cached) && cached.length >= 2) return (cached as string[]).slice(0, 2);
    return [Fn.select(0, Fn.getAzs()), Fn.select(1, Fn.getAzs())];
  }

  constructor(scope: Construct, id: string, props: RendezvousStackProps) {
    super(scope, id, props);
    const logRetention = RetentionDays.ONE_MONTH;
    this.alarmPrefix = alarmPrefixOf(this.region);
    this.table = new StateTable(this, 'State', {
      tableName: props.tableName,
      homeRegion: props.homeRegion,
      regions: props.tableRegions,
    });
    // From attributes, never looked up: synth stays offline.
    const zone = props.zone ? HostedZone.fromHostedZoneAttributes(this, 'Zone', props.zone) : undefined;
    let certificate: ICertificate | undefined;
    if (props.certificateArn)
      certificate = Certificate.fromCertificateArn(this, 'Certificate', props.certificateArn);
    else if (zone && props.apiDomain && props.relayDomain)
      // One certificate per region for every name users reach here; validated by DNS in the zone.
      certificate = new Certificate(this, 'Certificate', {
        domainName: props.apiDomain,
        subjectAlternativeNames: [props.relayDomain, `*.${props.relayDomain}`],
        validation: CertificateValidation.fromDns(zone),
      });
    this.relay = new RelayService(this, 'Relay', {
      table: this.table,
      publicPort: props.relayPort,
      tlsPort: props.relayTlsPort,
      httpPort: props.relayHttpPort,
      certificateArn: certificate?.certificateArn,
      domainName: props.relayDomain,
      desiredCount: props.relayDesiredCount,
      architecture: props.relayArchitecture,
      logRetention,
      nodeImage: props.nodeImage,
      natGateways: props.natGateways,
      directAddressing: props.relayDirect,
    });
    this.api = new RegistrationApi(this, 'Registration', {
      table: this.table,
      relayHost: this.relay.publicHost,
      relayPort: props.relayPort,
      relayTlsPort: this.relay.tlsPort,
      logRetention,
      alarmPrefix: this.alarmPrefix,
      reservedConcurrency: props.reservedConcurrency,
      lookupDirect: props.relayDirect,
    });
    this.observability = new Observability(this, 'Observability', {
      api: this.api,
      relay: this.relay,
      tableName: props.tableName,
      alarmEmail: props.alarmEmail,
      alarmPrefix: this.alarmPrefix,
    });
    if (zone && props.apiDomain && certificate) {
      const inZone =
        props.relayDomain &&
        (props.relayDomain === props.zone?.zoneName ||
          props.relayDomain.endsWith(`.${props.zone?.zoneName}`));
      const alarms = this.observability.byName;
      this.names = new RegionalNames(this, 'Names', {
        zone,
        apiDomain: props.apiDomain,
        certificate,
        api: this.api,
        relay: this.relay,
        relayDomain: inZone ? props.relayDomain : undefined,
        healthAlarms: [alarms.Api5xx, alarms.NoHealthyRelayGeneric].filter((a) => a !== undefined),
      });
    }
    new CfnOutput(this, 'TableName', {
      value: props.tableName,
      description: 'RENDEZVOUS_TABLE for provision',
    });

    NagSuppressions.addStackSuppressions(this, [
      {
        id: 'AwsSolutions-IAM4',
        reason:
          'Lambda and VPC flow-log roles use the AWS managed basic execution policies (CloudWatch Logs writes only).',
        appliesTo: ['Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole'],
      },
      {
        id: 'AwsSolutions-APIG4',
        reason:
          'The seed protocol authenticates hidden servers by TOTP inside the request and leaves mobile clients unauthenticated by design; an authorizer would break both.',
      },
      {
        id: 'AwsSolutions-L1',
        reason: 'Node 22 is pinned on purpose: it is the runtime the handlers are built and tested for.',
      },
      {
        id: 'AwsSolutions-IAM4',
        reason:
          'CodeDeploy shifts the Lambda aliases with the AWS managed AWSCodeDeployRoleForLambdaLimited policy (alias updates and hook invocations only).',
        appliesTo: [
          'Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSCodeDeployRoleForLambdaLimited',
        ],
      },
    ]);
  }
}
