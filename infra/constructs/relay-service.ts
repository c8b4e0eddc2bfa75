/**
 * The relay tier: a VPC over two AZs, an ECS cluster, a Fargate service built from
 * relay/Dockerfile, and a Network Load Balancer in front (TCP for the generic protocol; TLS 443
 * for the HTTP-specific one when a certificate is given). The peer port is reachable only from
 * the relay's own security group; the cluster secret lives in Secrets Manager.
 *
 * Timing: on a stop, ECS first deregisters the task (the NLB sends it no new connections for
 * `deregistrationDelay`, existing flows go on), then sends SIGTERM; the relay tells parked hidden
 * servers to re-park elsewhere and lets live splices run for `drainGrace`, inside `stopTimeout`.
 */
import { CfnOutput, Duration, RemovalPolicy } from 'aws-cdk-lib';
import { AdjustmentType } from 'aws-cdk-lib/aws-applicationautoscaling';
import {
  FlowLogDestination,
  GatewayVpcEndpointAwsService,
  IpAddresses,
  Peer,
  Port,
  SecurityGroup,
  SubnetType,
  Vpc,
} from 'aws-cdk-lib/aws-ec2';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import {
  Cluster,
  ContainerImage,
  ContainerInsights,
  CpuArchitecture,
  Secret as EcsSecret,
  FargateService,
  FargateTaskDefinition,
  LogDrivers,
  OperatingSystemFamily,
} from 'aws-cdk-lib/aws-ecs';
import {
  ListenerCertificate,
  type NetworkListener,
  NetworkLoadBalancer,
  type NetworkTargetGroup,
  Protocol,
  SslPolicy,
} from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Secret } from 'aws-cdk-lib/aws-secretsmanager';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import { PROJECT_ROOT } from './function.js';
import type { StateTable } from './state-table.js';

/** Container ports of the relay (fixed in relay/Dockerfile). */
export const RELAY_PORTS = { generic: 8899, http: 8898, peer: 8897, health: 8896 } as const;

/** Drain timing, kept consistent with each other (see the module comment). */
export const RELAY_TIMING = {
  deregistrationDelay: Duration.seconds(30),
  drainGrace: Duration.seconds(75),
  stopTimeout: Duration.seconds(90),
} as const;

/** Props of the relay service. */
export interface RelayServiceProps {
  table: StateTable;
  /** Public port of the generic-protocol TCP listener. */
  publicPort: number;
  /** ACM certificate (this region) for the TLS 443 listener of the HTTP-specific protocol. */
  certificateArn?: string;
  /** A DNS name (CNAME to the NLB) to put in triples instead of the NLB's own name. */
  domainName?: string;
  desiredCount: number;
  maxCount?: number;
  architecture: 'x86_64' | 'arm64';
  logRetention: RetentionDays;
  /** Base image override for the Docker build (default: the Dockerfile's public Node 22 image). */
  nodeImage?: string;
}

/** The relay service of one region. */
export class RelayService extends Construct {
  readonly vpc: Vpc;
  readonly service: FargateService;
  readonly nlb: NetworkLoadBalancer;
  readonly securityGroup: SecurityGroup;
  readonly genericTargets: NetworkTargetGroup;
  readonly httpTargets?: NetworkTargetGroup;
  readonly clusterSecret: Secret;
  /** The host triples name. */
  readonly publicHost: string;

  constructor(scope: Construct, id: string, props: RelayServiceProps) {
    super(scope, id);
    this.vpc = new Vpc(this, 'Vpc', {
      // A literal range, so rules that read it (security groups, cdk-nag) see a value, not a token.
      ipAddresses: IpAddresses.cidr('10.80.0.0/16'),
      maxAzs: 2,
      natGateways: 1,
      subnetConfiguration: [
        { name: 'public', subnetType: SubnetType.PUBLIC },
        { name: 'relay', subnetType: SubnetType.PRIVATE_WITH_EGRESS },
      ],
    });
    // Table traffic stays on the AWS network and off the NAT gateway's bill.
    this.vpc.addGatewayEndpoint('DynamoDb', { service: GatewayVpcEndpointAwsService.DYNAMODB });
    this.vpc.addFlowLog('FlowLogs', {
      destination: FlowLogDestination.toCloudWatchLogs(
        new LogGroup(this, 'FlowLogGroup', {
          retention: props.logRetention,
          removalPolicy: RemovalPolicy.DESTROY,
        }),
      ),
    });

    const cluster = new Cluster(this, 'Cluster', {
      vpc: this.vpc,
      containerInsightsV2: ContainerInsights.ENABLED,
    });
    this.clusterSecret = new Secret(this, 'ClusterSecret', {
      description: 'rendezvous relay cluster secret (signs peer links between relay tasks)',
      generateSecretString: { passwordLength: 48, excludePunctuation: true },
    });

    this.nlb = new NetworkLoadBalancer(this, 'Nlb', {
      vpc: this.vpc,
      internetFacing: true,
      crossZoneEnabled: true,
      vpcSubnets: { subnetType: SubnetType.PUBLIC },
    });
    this.publicHost = props.domainName ?? this.nlb.loadBalancerDnsName;

    const task = new FargateTaskDefinition(this, 'Task', {
      cpu: 512,
      memoryLimitMiB: 1024,
      runtimePlatform: {
        cpuArchitecture: props.architecture === 'arm64' ? CpuArchitecture.ARM64 : CpuArchitecture.X86_64,
        operatingSystemFamily: OperatingSystemFamily.LINUX,
      },
    });
    const logGroup = new LogGroup(this, 'Logs', {
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    task.addContainer('relay', {
      image: ContainerImage.fromAsset(PROJECT_ROOT, {
        file: 'relay/Dockerfile',
        platform: props.architecture === 'arm64' ? Platform.LINUX_ARM64 : Platform.LINUX_AMD64,
        buildArgs: props.nodeImage ? { NODE_IMAGE: props.nodeImage } : undefined,
      }),
      logging: LogDrivers.awsLogs({ streamPrefix: 'relay', logGroup }),
      environment: {
        RENDEZVOUS_TABLE: props.table.tableName,
        RELAY_BIND: '0.0.0.0',
        RELAY_PORT: String(RELAY_PORTS.generic),
        RELAY_HTTP_PORT: String(RELAY_PORTS.http),
        RELAY_PEER_PORT: String(RELAY_PORTS.peer),
        RELAY_HEALTH_PORT: String(RELAY_PORTS.health),
        RELAY_PUBLIC_HOST: this.publicHost,
        RELAY_PUBLIC_PORT: String(props.publicPort),
        RELAY_DRAIN_GRACE_MS: String(RELAY_TIMING.drainGrace.toMilliseconds()),
      },
      secrets: { RELAY_CLUSTER_SECRET: EcsSecret.fromSecretsManager(this.clusterSecret) },
      portMappings: Object.values(RELAY_PORTS).map((containerPort) => ({ containerPort })),
      stopTimeout: RELAY_TIMING.stopTimeout,
      readonlyRootFilesystem: true,
    });
    props.table.grant(task.taskRole, ['GetItem', 'PutItem', 'UpdateItem', 'DeleteItem', 'Query']);

    this.securityGroup = new SecurityGroup(this, 'RelaySecurityGroup', {
      vpc: this.vpc,
      description: 'rendezvous relay tasks',
      allowAllOutbound: true,
    });
    // The NLB preserves client addresses (the relay limits handshakes per source address), so the
    // public ports accept any source; the tasks sit in private subnets, reachable only via the NLB.
    this.securityGroup.addIngressRule(
      Peer.anyIpv4(),
      Port.tcp(RELAY_PORTS.generic),
      'generic protocol, via the NLB',
    );
    this.securityGroup.addIngressRule(
      Peer.anyIpv4(),
      Port.tcp(RELAY_PORTS.http),
      'HTTP-specific protocol, via the NLB',
    );
    this.securityGroup.addIngressRule(
      Peer.ipv4('10.80.0.0/16'),
      Port.tcp(RELAY_PORTS.health),
      'health checks, from the NLB inside the VPC',
    );
    this.securityGroup.addIngressRule(
      this.securityGroup,
      Port.tcp(RELAY_PORTS.peer),
      'peer links, relay tasks only',
    );

    this.service = new FargateService(this, 'Service', {
      cluster,
      taskDefinition: task,
      desiredCount: props.desiredCount,
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { rollback: true },
      securityGroups: [this.securityGroup],
      vpcSubnets: { subnetType: SubnetType.PRIVATE_WITH_EGRESS },
    });

    // Both listeners reach the same tasks on their own container port, health-checked on /healthz.
    const relayTargets = (listener: NetworkListener, id: string, containerPort: number) =>
      listener.addTargets(id, {
        port: containerPort,
        protocol: Protocol.TCP,
        targets: [this.service.loadBalancerTarget({ containerName: 'relay', containerPort })],
        deregistrationDelay: RELAY_TIMING.deregistrationDelay,
        // The relay sees real client addresses, which its per-source handshake limit needs.
        preserveClientIp: true,
        healthCheck: {
          protocol: Protocol.HTTP,
          port: String(RELAY_PORTS.health),
          path: '/healthz',
          interval: Duration.seconds(10),
          healthyThresholdCount: 2,
          unhealthyThresholdCount: 2,
        },
      });
    const generic = this.nlb.addListener('Generic', { port: props.publicPort, protocol: Protocol.TCP });
    this.genericTargets = relayTargets(generic, 'GenericRelays', RELAY_PORTS.generic);
    if (props.certificateArn) {
      const https = this.nlb.addListener('Https', {
        port: 443,
        protocol: Protocol.TLS,
        certificates: [ListenerCertificate.fromArn(props.certificateArn)],
        sslPolicy: SslPolicy.RECOMMENDED_TLS,
      });
      this.httpTargets = relayTargets(https, 'HttpRelays', RELAY_PORTS.http);
    }

    const scaling = this.service.autoScaleTaskCount({
      minCapacity: props.desiredCount,
      maxCapacity: props.maxCount ?? Math.max(10, props.desiredCount),
    });
    scaling.scaleOnCpuUtilization('Cpu', { targetUtilizationPercent: 60 });
    // Parked sockets and splices cost memory and file descriptors more than CPU: scale on flows too.
    scaling.scaleOnMetric('ActiveFlows', {
      metric: this.nlb.metrics.activeFlowCount({ period: Duration.minutes(1), statistic: 'Average' }),
      adjustmentType: AdjustmentType.CHANGE_IN_CAPACITY,
      scalingSteps: [
        { upper: 2_000, change: -1 },
        { lower: 20_000, change: +1 },
        { lower: 80_000, change: +3 },
      ],
    });

    new CfnOutput(this, 'RelayHost', { value: this.publicHost, description: 'relay host named in triples' });
    new CfnOutput(this, 'RelayPort', {
      value: String(props.publicPort),
      description: 'generic-protocol port',
    });
    new CfnOutput(this, 'RelayHttpUrl', {
      value: props.certificateArn
        ? `https://${this.publicHost}`
        : 'none (give -c certificateArn=… for the TLS listener)',
      description: 'RENDEZVOUS_RELAY_HTTP for expose --protocol http',
    });

    NagSuppressions.addResourceSuppressions(
      task,
      [
        {
          id: 'AwsSolutions-ECS2',
          reason:
            'The environment holds ports, the table name and the public host, no secrets; the cluster secret is injected from Secrets Manager.',
        },
      ],
      true,
    );
    NagSuppressions.addResourceSuppressions(this.clusterSecret, [
      {
        id: 'AwsSolutions-SMG4',
        reason:
          'The cluster secret only signs peer links inside the VPC; rotating it needs every task restarted at once, which a redeploy does.',
      },
    ]);
    NagSuppressions.addResourceSuppressions(this.securityGroup, [
      {
        id: 'AwsSolutions-EC23',
        reason:
          'The relay ports are public by design and the NLB preserves client addresses; the tasks are in private subnets, so only NLB traffic arrives, and health and peer ports stay VPC-only.',
      },
    ]);
    NagSuppressions.addResourceSuppressions(this.nlb, [
      {
        id: 'AwsSolutions-ELB2',
        reason:
          'NLB access logs cover only TLS listeners; the relay logs every rendezvous itself and flow logs cover the VPC.',
      },
    ]);
    NagSuppressions.addResourceSuppressions(
      task,
      [
        {
          id: 'AwsSolutions-IAM5',
          reason:
            'The execution role gets ecr:GetAuthorizationToken, which has no resource-level scope, from the ECS construct.',
          appliesTo: ['Resource::*'],
        },
      ],
      true,
    );
  }
}
