/** One region of the service: table (or its replica), registration API, relay service, observability. */
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
  /** True in the first region of the rollout: it owns the global table. */
  tableOwner: boolean;
  /** The other regions of the rollout (replicas; owner only). */
  replicaRegions: string[];
  relayPort: number;
  relayDesiredCount: number;
  relayArchitecture: 'x86_64' | 'arm64';
  certificateArn?: string;
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
    this.table = new StateTable(this, 'State', {
      tableName: props.tableName,
      owner: props.tableOwner,
      replicaRegions: props.replicaRegions,
    });
    this.relay = new RelayService(this, 'Relay', {
      table: this.table,
      publicPort: props.relayPort,
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
      logRetention,
    });
    this.observability = new Observability(this, 'Observability', {
      api: this.api,
      relay: this.relay,
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
