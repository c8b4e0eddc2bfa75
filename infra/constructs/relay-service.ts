/**
 * The relay tier: a VPC over two AZs, an ECS cluster, a Fargate service built from
 * relay/Dockerfile, and a Network Load Balancer in front with its own security group.
 * Listeners: TCP `publicPort` (8899) for the generic protocol, always (original clients speak
 * plain TCP); without a certificate a plain TCP listener for the HTTP-specific protocol on
 * `httpPort` (8898); with one, TLS 443 for the HTTP-specific protocol and TLS `tlsPort` (8443) for
 * the generic protocol (our agent and client use it when the triple says `tlsPort`).
 *
 * Packet paths (and no others; test/infra/network-paths.test.ts walks them): internet → NLB
 * security group on the listener ports → task security group on the target ports and the health
 * port (NLB health checks obey the NLB group's egress rules); the peer port only between relay
 * tasks. Targets admit the NLB's group, which AWS documents to hold with client IP preservation.
 *
 * Timing: on a stop, ECS first deregisters the task (the NLB sends it no new connections for
 * `deregistrationDelay`, existing flows go on), then sends SIGTERM; the relay tells parked hidden
 * servers to re-park elsewhere and lets live splices run for `drainGrace`, inside `stopTimeout`.
 */
import { CfnOutput, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Metric } from 'aws-cdk-lib/aws-cloudwatch';
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
  UlimitName,
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
import { DEPLOYMENT_DIMENSION, METRIC, METRICS_NAMESPACE } from '../../server/metrics/catalogue.js';
import { RELAY_NOFILE, RELAY_SCALING, RELAY_TASK_CPU, RELAY_TASK_MEMORY_MIB } from './capacity.js';
import { directEnvironment, directPlacement, openDirect } from './direct-addressing.js';
import { metricsEnvironment, PROJECT_ROOT } from './function.js';
import type { StateTable } from './state-table.js';

/** Container ports of the relay (fixed in relay/Dockerfile). */
export const RELAY_PORTS = { generic: 8899, http: 8898, peer: 8897, health: 8896 } as const;

/** Open-file limit of the relay task (defined with the capacity it bounds). */
export { RELAY_NOFILE } from './capacity.js';

/** Default public ports: generic over TLS, HTTP-specific in plain TCP (no certificate). */
export const PUBLIC_PORT_DEFAULTS = { tls: 8443, http: 8898 } as const;

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
  /** Public port of the generic protocol over TLS (with a certificate; default 8443). */
  tlsPort?: number;
  /** Public port of the plain HTTP-specific listener (without a certificate; default 8898). */
  httpPort?: number;
  /**
   * ACM certificate (this region) for the TLS listeners: 443 (HTTP-specific) and `tlsPort`
   * (generic). It must name `domainName` (and `*.domainName` for host-based routing).
   */
  certificateArn?: string;
  /** This region's relay name (CNAME to the NLB), put in triples instead of the NLB's own name. */
  domainName?: string;
  /** Fewest relay tasks (autoscaling's minimum; the service itself names no count). */
  desiredCount: number;
  maxCount?: number;
  architecture: 'x86_64' | 'arm64';
  logRetention: RetentionDays;
  /** Base image override for the Docker build (default: the Dockerfile's public Node 22 image). */
  nodeImage?: string;
  /** NAT gateways: 2 (one per AZ, default) or 1. */
  natGateways?: 1 | 2;
  /** Direct addressing (default off): public task IPv4s, look-ups name the holding task (direct-addressing.ts). */
  directAddressing?: boolean;
}

/** The relay service of one region. */
export class RelayService extends Construct {
  readonly vpc: Vpc;
  readonly service: FargateService;
  readonly nlb: NetworkLoadBalancer;
  /** The relay tasks' security group. */
  readonly securityGroup: SecurityGroup;
  /** The NLB's own security group. */
  readonly nlbSecurityGroup: SecurityGroup;
  readonly genericTargets: NetworkTargetGroup;
  /** Generic protocol over TLS (with a certificate). */
  readonly genericTlsTargets?: NetworkTargetGroup;
  /** HTTP-specific protocol: plain TCP without a certificate, TLS 443 with one. */
  readonly httpTargets: NetworkTargetGroup;
  /** Every target group, labelled (for alarms). */
  readonly targetGroups: Array<{ name: string; group: NetworkTargetGroup }> = [];
  /** The TLS port of the generic protocol, when there is a TLS listener. */
  readonly tlsPort?: number;
  readonly clusterSecret: Secret;
  /** The host triples name. */
  readonly publicHost: string;
  /**
   * Public base URL of this region's HTTP-specific listener (`https://<name>` with a certificate,
   * `http://<host>:<port>` without); relays in other regions redirect there.
   */
  readonly httpUrl: string;
  /** The `RelayHttpUrl` output (the pipeline's smoke step reads it). */
  readonly httpUrlOutput: CfnOutput;

  constructor(scope: Construct, id: string, props: RelayServiceProps) {
    super(scope, id);
    if (props.certificateArn && !props.domainName)
      throw new Error(
        "a certificate needs the relay domain it names: clients check the name, and the NLB's own name is not on it. " +
          'Add -c relayDomain=relay.{region}.example.com (certificate for that name and *.that name).',
      );
    this.vpc = new Vpc(this, 'Vpc', {
      // A literal range, so rules that read it (security groups, cdk-nag) see a value, not a token.
      ipAddresses: IpAddresses.cidr('10.80.0.0/16'),
      maxAzs: 2,
      // One per AZ by default: each private subnet routes to its own AZ's gateway, so losing an
      // AZ leaves the other AZ's tasks their way to ECR, Secrets Manager, CloudWatch Logs (and the
      // EMF metrics that drive scaling) and the home region. 1 is the cheap setting.
      natGateways: props.natGateways ?? 2,
      subnetConfiguration: [
        { name: 'public', subnetType: SubnetType.PUBLIC },
        { name: 'relay', subnetType: SubnetType.PRIVATE_WITH_EGRESS },
      ],
    });
    // Table traffic (this region's replica) and ECR's image layers (S3) stay on the AWS network
    // and off the NAT gateways' bill; gateway endpoints are free and need no AZ.
    this.vpc.addGatewayEndpoint('DynamoDb', { service: GatewayVpcEndpointAwsService.DYNAMODB });
    this.vpc.addGatewayEndpoint('S3', { service: GatewayVpcEndpointAwsService.S3 });
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

    // The NLB's own group: listener ports in from anywhere, out only to the tasks (rules below).
    this.nlbSecurityGroup = new SecurityGroup(this, 'NlbSecurityGroup', {
      vpc: this.vpc,
      description: 'rendezvous relay NLB: listener ports in, relay target and health ports out',
      allowAllOutbound: false,
    });
    this.nlb = new NetworkLoadBalancer(this, 'Nlb', {
      vpc: this.vpc,
      internetFacing: true,
      crossZoneEnabled: true,
      vpcSubnets: { subnetType: SubnetType.PUBLIC },
      securityGroups: [this.nlbSecurityGroup],
    });
    this.publicHost = props.domainName ?? this.nlb.loadBalancerDnsName;
    this.httpUrl = props.certificateArn
      ? `https://${this.publicHost}`
      : `http://${this.publicHost}:${props.httpPort ?? PUBLIC_PORT_DEFAULTS.http}`;

    const task = new FargateTaskDefinition(this, 'Task', {
      cpu: RELAY_TASK_CPU,
      memoryLimitMiB: RELAY_TASK_MEMORY_MIB,
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
        // Where a relay in another region sends an HTTP-specific request for a server parked here.
        RELAY_REGION: Stack.of(this).region,
        RELAY_HTTP_PUBLIC_URL: this.httpUrl,
        // CONNECT codes are claimed on the table's home replica, as the register function does,
        // so one code is accepted once across regions.
        RENDEZVOUS_HOME_REGION: props.table.homeRegion ?? Stack.of(this).region,
        // Host-based routing of the HTTP-specific protocol (<id>.<domain>); needs *.<domain> on TLS.
        ...(props.domainName ? { RELAY_HTTP_DOMAIN: props.domainName } : {}),
        // Metrics from inside, as EMF lines on stdout once a minute: the awslogs driver carries
        // them to CloudWatch Logs, which extracts them (no cloudwatch:PutMetricData needed).
        ...metricsEnvironment(this),
        // Direct addressing: look-ups name the task holding a hidden server (direct-addressing.ts).
        ...directEnvironment(!!props.directAddressing, RELAY_PORTS.generic),
      },
      ulimits: [{ name: UlimitName.NOFILE, softLimit: RELAY_NOFILE, hardLimit: RELAY_NOFILE }],
      secrets: { RELAY_CLUSTER_SECRET: EcsSecret.fromSecretsManager(this.clusterSecret) },
      portMappings: Object.values(RELAY_PORTS).map((containerPort) => ({ containerPort })),
      stopTimeout: RELAY_TIMING.stopTimeout,
      readonlyRootFilesystem: true,
    });
    props.table.grantWithHome(task.taskRole, ['GetItem', 'PutItem', 'UpdateItem', 'DeleteItem', 'Query']);

    // Outbound open: the tasks reach DynamoDB (gateway endpoint), Secrets Manager, ECR and
    // CloudWatch Logs through the NAT gateway. Inbound: only the rules below.
    this.securityGroup = new SecurityGroup(this, 'RelaySecurityGroup', {
      vpc: this.vpc,
      description: 'rendezvous relay tasks',
      allowAllOutbound: true,
    });
    this.securityGroup.addIngressRule(
      this.securityGroup,
      Port.tcp(RELAY_PORTS.peer),
      'peer links, relay tasks only',
    );
    if (props.directAddressing) openDirect(this.securityGroup, task.taskRole, RELAY_PORTS.generic);

    this.service = new FargateService(this, 'Service', {
      cluster,
      taskDefinition: task,
      // No DesiredCount: CloudFormation would re-apply it on every service update, cutting a
      // fleet that autoscaling grew back to it (and re-parking every hidden server at once).
      // Autoscaling owns the count: ECS creates the service with one task, and registering the
      // scalable target (MinCapacity = desiredCount) raises it to the minimum right after.
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { rollback: true },
      securityGroups: [this.securityGroup],
      ...directPlacement(!!props.directAddressing),
    });

    // Every listener reaches the tasks on its container port, health-checked on /healthz.
    const healthPort = Port.tcp(RELAY_PORTS.health);
    this.securityGroup.connections.allowFrom(this.nlbSecurityGroup, healthPort, 'NLB health checks');
    const opened = new Set<number>();
    const listen = (
      id: string,
      listenerProps: { port: number; protocol: Protocol; certificates?: ListenerCertificate[] },
      containerPort: number,
      label: string,
    ) => {
      this.nlbSecurityGroup.addIngressRule(Peer.anyIpv4(), Port.tcp(listenerProps.port), label);
      if (!opened.has(containerPort)) {
        opened.add(containerPort);
        this.securityGroup.connections.allowFrom(
          this.nlbSecurityGroup,
          Port.tcp(containerPort),
          `${label}, from the NLB`,
        );
      }
      const listener: NetworkListener = this.nlb.addListener(id, {
        ...listenerProps,
        ...(listenerProps.protocol === Protocol.TLS ? { sslPolicy: SslPolicy.RECOMMENDED_TLS } : {}),
      });
      const group = listener.addTargets(`${id}Relays`, {
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
      this.targetGroups.push({ name: id, group });
      return group;
    };
    this.genericTargets = listen(
      'Generic',
      { port: props.publicPort, protocol: Protocol.TCP },
      RELAY_PORTS.generic,
      'generic protocol',
    );
    if (props.certificateArn) {
      const certificates = [ListenerCertificate.fromArn(props.certificateArn)];
      this.tlsPort = props.tlsPort ?? PUBLIC_PORT_DEFAULTS.tls;
      this.genericTlsTargets = listen(
        'GenericTls',
        { port: this.tlsPort, protocol: Protocol.TLS, certificates },
        RELAY_PORTS.generic,
        'generic protocol over TLS',
      );
      this.httpTargets = listen(
        'Https',
        { port: 443, protocol: Protocol.TLS, certificates },
        RELAY_PORTS.http,
        'HTTP-specific protocol over TLS',
      );
    } else {
      this.httpTargets = listen(
        'Http',
        { port: props.httpPort ?? PUBLIC_PORT_DEFAULTS.http, protocol: Protocol.TCP },
        RELAY_PORTS.http,
        'HTTP-specific protocol',
      );
    }

    const scaling = this.service.autoScaleTaskCount({
      minCapacity: props.desiredCount,
      maxCapacity: props.maxCount ?? Math.max(10, props.desiredCount),
    });
    // What fills a relay task is parked sockets and live splices (memory and descriptors), so
    // scaling follows them per task: each task writes its own total once a minute (the EMF record
    // with the Deployment dimension only), so their Average is the per-task value. Targets are
    // derived in capacity.ts. With several target-tracking policies, Application Auto Scaling
    // scales out when any is above its target and in only when all are below theirs.
    // The NLB's active-flow step scaling is gone: it counted the whole NLB (not per task) against
    // fixed thresholds, so its meaning changed with the task count, it counted handshakes and
    // floods that hold nothing, and its scale-in step fought the target-tracking policies.
    const perTask = (def: (typeof METRIC)['parkedSockets' | 'liveSplices']) =>
      new Metric({
        namespace: METRICS_NAMESPACE,
        metricName: def.emf,
        dimensionsMap: { [DEPLOYMENT_DIMENSION]: Stack.of(this).stackName },
        statistic: 'Average',
        period: Duration.minutes(1),
      });
    // Out fast (a task takes a minute to start), in slowly: every scale-in makes the stopped
    // task's hidden servers re-park elsewhere.
    const cooldowns = { scaleOutCooldown: Duration.minutes(1), scaleInCooldown: Duration.minutes(10) };
    scaling.scaleToTrackCustomMetric('ParkedSockets', {
      metric: perTask(METRIC.parkedSockets),
      targetValue: RELAY_SCALING.parkedSocketsTarget,
      ...cooldowns,
    });
    scaling.scaleToTrackCustomMetric('LiveSplices', {
      metric: perTask(METRIC.liveSplices),
      targetValue: RELAY_SCALING.liveSplicesTarget,
      ...cooldowns,
    });
    // CPU is the guard: splices moving bulk data cost CPU long before they cost memory.
    scaling.scaleOnCpuUtilization('Cpu', {
      targetUtilizationPercent: RELAY_SCALING.cpuTargetPercent,
      ...cooldowns,
    });

    new CfnOutput(this, 'RelayHost', { value: this.publicHost, description: 'relay host named in triples' });
    new CfnOutput(this, 'RelayPort', {
      value: String(props.publicPort),
      description: 'generic-protocol port',
    });
    new CfnOutput(this, 'RelayTlsPort', {
      value: this.tlsPort ? String(this.tlsPort) : 'none (give -c certificateArn=… and relayDomain)',
      description: 'generic protocol over TLS (triples carry it as tlsPort)',
    });
    this.httpUrlOutput = new CfnOutput(this, 'RelayHttpUrl', {
      value: this.httpUrl,
      description: 'RENDEZVOUS_RELAY_HTTP for expose --protocol http',
    });
    new CfnOutput(this, 'NlbDnsName', {
      value: this.nlb.loadBalancerDnsName,
      description: 'point the relay domain (and *.domain) here with a CNAME or alias',
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
    NagSuppressions.addResourceSuppressions(this.nlbSecurityGroup, [
      {
        id: 'AwsSolutions-EC23',
        reason:
          'The NLB is the public relay endpoint: its listener ports admit any source by design (mobile clients and hidden servers connect from anywhere). The tasks admit only this group.',
      },
    ]);
    NagSuppressions.addResourceSuppressions(this.nlb, [
      {
        id: 'AwsSolutions-ELB2',
        reason:
          'NLB access logs record only TLS listeners, not the plain TCP ones original clients need; the VPC flow logs (enabled above) record every connection to the NLB and the tasks instead.',
      },
    ]);
    NagSuppressions.addResourceSuppressions(
      task,
      [
        {
          id: 'AwsSolutions-IAM5',
          reason:
            'The execution role gets ecr:GetAuthorizationToken, which has no resource-level scope, from the ECS construct; ' +
            'with direct addressing the task role gets ec2:DescribeNetworkInterfaces (read-only, no resource-level scope) to read its public IPv4.',
          appliesTo: ['Resource::*'],
        },
      ],
      true,
    );
  }
}
