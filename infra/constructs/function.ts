/**
 * A Lambda function with this project's defaults: Node 22 on arm64, an esbuild-minified ESM
 * bundle with source maps, and its own log group with retention. Callers reach it through the
 * `live` alias only: each deploy publishes a version and CodeDeploy shifts the alias to it as a
 * canary (10 % for 5 minutes), rolling back by itself when the alias's error alarm fires.
 */
import { fileURLToPath } from 'node:url';
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Alarm, ComparisonOperator, TreatMissingData } from 'aws-cdk-lib/aws-cloudwatch';
import {
  type ILambdaDeploymentConfig,
  LambdaDeploymentConfig,
  LambdaDeploymentGroup,
} from 'aws-cdk-lib/aws-codedeploy';
import { Alias, Architecture, Runtime } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

/** The repository root, where package-lock.json and the handlers live. */
export const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * The environment that turns on metrics from inside (server/metrics/registry.ts): EMF lines on
 * stdout once a minute, their Deployment dimension (server/metrics/catalogue.ts
 * DEPLOYMENT_DIMENSION) naming this stack, so two stacks in one region never mix. CloudWatch Logs
 * extracts EMF from the log events it already receives: no IAM beyond writing logs
 * (cloudwatch:PutMetricData is not needed).
 */
export function metricsEnvironment(scope: Construct): Record<string, string> {
  return { RENDEZVOUS_METRICS: 'emf', RENDEZVOUS_METRICS_DIMENSION: Stack.of(scope).stackName };
}

/** Props of a project function. */
export interface RendezvousFunctionProps {
  /** Handler source, relative to the repository root (bundled by path; never imported here). */
  entry: string;
  environment: Record<string, string>;
  logRetention: RetentionDays;
  /** Name of the alias's error alarm (the canary's rollback trigger). */
  canaryAlarmName: string;
  /** How CodeDeploy shifts traffic to a new version (default: 10 % for 5 minutes, then all). */
  deploymentConfig?: ILambdaDeploymentConfig;
  /**
   * Concurrent executions kept for this function and never exceeded (undefined: none reserved,
   * the account's shared pool). Keeps a flood on one function from starving the other and the
   * account's other functions.
   */
  reservedConcurrency?: number;
}

/** The alias every caller (API integrations) invokes. */
export const LIVE_ALIAS = 'live';

/** A NodejsFunction with the project's defaults and log group. */
export class RendezvousFunction extends Construct {
  readonly fn: NodejsFunction;
  readonly logGroup: LogGroup;
  /** The `live` alias: what the API calls. */
  readonly alias: Alias;
  /** Errors through the alias, per minute: CodeDeploy rolls the canary back when it fires. */
  readonly canaryAlarm: Alarm;
  readonly deploymentGroup: LambdaDeploymentGroup;

  constructor(scope: Construct, id: string, props: RendezvousFunctionProps) {
    super(scope, id);
    this.logGroup = new LogGroup(this, 'Logs', {
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.fn = new NodejsFunction(this, 'Function', {
      entry: `${PROJECT_ROOT}${props.entry}`,
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: `${PROJECT_ROOT}package-lock.json`,
      handler: 'handler',
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: 256,
      timeout: Duration.seconds(10),
      reservedConcurrentExecutions: props.reservedConcurrency,
      logGroup: this.logGroup,
      environment: {
        NODE_OPTIONS: '--enable-source-maps',
        ...metricsEnvironment(this),
        ...props.environment,
      },
      bundling: {
        minify: true,
        sourceMap: true,
        format: OutputFormat.ESM,
        target: 'node22',
        mainFields: ['module', 'main'],
        // Bundle the SDK too: the version we test is the version that runs.
        externalModules: [],
        // As scripts/build.mjs: credentials from the environment only (functions/lambda-credentials.ts).
        esbuildArgs: { '--alias:@aws-sdk/credential-provider-node': './functions/lambda-credentials.ts' },
        // CommonJS dependencies call require(); an ESM bundle needs one.
        banner: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
      },
    });
    // A new version per code or configuration change; the alias points at it only through CodeDeploy.
    this.alias = new Alias(this, 'Live', { aliasName: LIVE_ALIAS, version: this.fn.currentVersion });
    // One-minute periods: the canary lasts five, so a five-minute alarm could miss it entirely.
    // Through the alias, both versions count: any error while the canary runs stops it (the
    // conservative side; an old version failing at the same time is not a reason to go on).
    this.canaryAlarm = new Alarm(this, 'CanaryErrors', {
      alarmName: props.canaryAlarmName,
      alarmDescription: `errors through the ${LIVE_ALIAS} alias: rolls back a Lambda canary deployment`,
      metric: this.alias.metricErrors({ period: Duration.minutes(1), statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    });
    this.deploymentGroup = new LambdaDeploymentGroup(this, 'Deployment', {
      alias: this.alias,
      deploymentConfig: props.deploymentConfig ?? LambdaDeploymentConfig.CANARY_10PERCENT_5MINUTES,
      alarms: [this.canaryAlarm],
      autoRollback: { failedDeployment: true, stoppedDeployment: true, deploymentInAlarm: true },
    });
  }
}
