/**
 * One region of the service: registration API, relay service, observability, over the local
 * replica of the state table (created by the table stack, which this stack depends on).
 */
import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { NagSuppressions } from 'cdk-nag';
import type { Construct } from 'constructs';
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
}

/** The rendezvous service in one region. */
export class RendezvousStack extends Stack {
  readonly table: StateTable;
  readonly api: RegistrationApi;
  readonly relay: RelayService;
  readonly observability: Observability;

  constructor(scope: Construct, id: string, props: RendezvousStackProps) {
    super(scope, id, props);
    const logRetention = RetentionDays.ONE_MONTH;
    this.table = new StateTable(this, 'State', { tableName: props.tableName });
    this.relay = new RelayService(this, 'Relay', {
      table: this.table,
      publicPort: props.relayPort,
      tlsPort: props.relayTlsPort,
      httpPort: props.relayHttpPort,
      certificateArn: props.certificateArn,
      domainName: props.relayDomain,
      desiredCount: props.relayDesiredCount,
      architecture: props.relayArchitecture,
      logRetention,
      nodeImage: props.nodeImage,
    });
    this.api = new RegistrationApi(this, 'Registration', {
      table: this.table,
      relayHost: this.relay.publicHost,
      relayPort: props.relayPort,
      relayTlsPort: this.relay.tlsPort,
      logRetention,
    });
    this.observability = new Observability(this, 'Observability', {
      api: this.api,
      relay: this.relay,
      tableName: props.tableName,
      alarmEmail: props.alarmEmail,
    });
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
    ]);
  }
}
