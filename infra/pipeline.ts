/**
 * The staged rollout as code: a CDK Pipelines app (`npx cdk deploy -c pipeline=true`; infra/main.ts
 * builds it) whose pipeline, on every push to the source branch:
 *
 *   1. synthesises this app (the same context) and updates itself;
 *   2. deploys the table stack (home region);
 *   3. deploys the canary region, then runs the smoke test against it (`rendezvous smoke`
 *      registers, parks, pairs and moves bytes through both protocols with an identity kept for
 *      the purpose), then bakes: for `bakeMinutes` it lists the region's alarms every minute and
 *      fails at the first one in ALARM (optionally a manual approval after that);
 *   4. deploys the other regions as one wave, each followed by the same smoke test and gate.
 *
 * A failed step stops the pipeline there: no later region gets the release. Inside a region the
 * release rolls itself back on alarm (ECS deployment alarms, Lambda canaries through CodeDeploy),
 * so the canary region returns to the previous release and the gate then fails on the alarm.
 *
 * Keep this context in cdk.json and commit it: the pipeline synthesises from the repository.
 * Context given with -c beyond cdk.json is written into the synth step (see `passed` below).
 * Context, besides the service's (infra/app.ts; stack names and props from infra/plan.ts):
 *   account            required (cross-region pipelines need a concrete account)
 *   pipelineRegion     where the pipeline runs (default: the first region)
 *   repository, branch, connectionArn   a connection source (GitHub, GitLab, Bitbucket)
 *   codeCommitRepository                or a CodeCommit repository (with branch): only for accounts
 *                                       that already use CodeCommit (it takes no new customers)
 *   canaryRegion       the region that goes first (default: the first region)
 *   bakeMinutes        canary bake, alarms watched (default 15); waveBakeMinutes (default 5)
 *   canaryApproval     true: a manual approval after the canary's bake
 *   smokeUuid          the smoke identities' prefix: <smokeUuid>-<region> (default rendezvous-smoke)
 *   smokeSecretName    their secrets' prefix in Secrets Manager: <name>/<region> (default rendezvous/smoke)
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Aspects, Duration, Stack, Stage, type StageProps } from 'aws-cdk-lib';
import {
  BuildEnvironmentVariableType,
  BuildSpec,
  ComputeType,
  LinuxBuildImage,
} from 'aws-cdk-lib/aws-codebuild';
import { Repository } from 'aws-cdk-lib/aws-codecommit';
import { PolicyStatement, Role } from 'aws-cdk-lib/aws-iam';
import {
  CodeBuildStep,
  CodePipeline,
  CodePipelineSource,
  ManualApprovalStep,
  ShellStep,
  type Step,
} from 'aws-cdk-lib/pipelines';
import { AwsSolutionsChecks, NagSuppressions } from 'cdk-nag';
import type { Construct } from 'constructs';
import { PROJECT_ROOT } from './constructs/function.js';
import { type ContextGetter, type DeploymentPlan, planFromContext } from './context.js';
import {
  bundleRelayUnlessSkipped,
  regionStackName,
  regionStackProps,
  TABLE_STACK,
  tableStackProps,
} from './plan.js';
import { alarmPrefixOf, RendezvousStack } from './stack.js';
import { TableStack } from './table-stack.js';

/** Name of the pipeline's stack. */
export const PIPELINE_STACK = 'Rendezvous-Pipeline';

/** The context keys the synth step passes on (the service's and the pipeline's). */
export const PASSED_CONTEXT = [
  'regions',
  'deployedRegions',
  'retiringRegions',
  'account',
  'tableName',
  'relayPort',
  'relayTlsPort',
  'relayHttpPort',
  'relayDesiredCount',
  'relayArchitecture',
  'certificateArn',
  'relayDomain',
  'alarmEmail',
  'nodeImage',
  'hostedZoneId',
  'zoneName',
  'apiDomain',
  'natGateways',
  'reservedConcurrency',
  'pipelineRegion',
  'repository',
  'branch',
  'connectionArn',
  'codeCommitRepository',
  'canaryRegion',
  'bakeMinutes',
  'waveBakeMinutes',
  'canaryApproval',
  'smokeUuid',
  'smokeSecretName',
] as const;

/** The pipeline's own settings. */
export interface PipelinePlan {
  account: string;
  region: string;
  source:
    | { kind: 'connection'; repository: string; branch: string; connectionArn: string }
    | { kind: 'codecommit'; repository: string; branch: string };
  canary: string;
  /** The regions after the canary, deployed as one wave. */
  wave: string[];
  bakeMinutes: number;
  waveBakeMinutes: number;
  canaryApproval: boolean;
  /** The smoke identities' uuid prefix: each region's is `<smokeUuid>-<region>` (smokeIdentity). */
  smokeUuid: string;
  /** The smoke secrets' name prefix: each region's is `<smokeSecretName>/<region>`. */
  smokeSecretName: string;
}

/**
 * Each region's own smoke identity and secret. The wave's regions run their smoke tests at the
 * same time: with one identity, a second region's registration would replace the first's
 * mid-test (same TOTP window), and the first would then fail or pair with the other's socket.
 */
export function smokeIdentity(pp: Pick<PipelinePlan, 'smokeUuid' | 'smokeSecretName'>, region: string) {
  return { uuid: `${pp.smokeUuid}-${region}`, secretName: `${pp.smokeSecretName}/${region}` };
}

/** The CDK CLI the pipeline installs for self-mutation: the one package-lock.json pins for synth. */
export const CDK_CLI_VERSION = '2.1148.1';
/** cdk-assets, pinned: the asset steps install it by this exact version, never `latest`. */
export const CDK_ASSETS_VERSION = '4.7.3';
/** Node.js of every build (package.json engines; Node 20 reached end of life on 2026-04-30). */
export const BUILD_NODE = '22';

function minutes(v: unknown, name: string, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 480)
    throw new Error(`context ${name}: whole minutes from 0 to 480, not ${String(v)}`);
  return n;
}

/** Reads and checks the pipeline's context. Throws an Error whose message says what to change. */
export function pipelinePlanFromContext(get: ContextGetter, plan: DeploymentPlan): PipelinePlan {
  const ctx = (key: string): string | undefined => {
    const v = get(key);
    return v === undefined || v === null || v === '' ? undefined : String(v);
  };
  const account = ctx('account') ?? process.env.CDK_DEFAULT_ACCOUNT;
  if (!account || !/^\d{12}$/.test(account))
    throw new Error(
      'the pipeline needs the account it deploys to: -c account=111122223333 (a pipeline that deploys to several regions cannot use an account-agnostic stack)',
    );
  const branch = ctx('branch') ?? 'main';
  let source: PipelinePlan['source'];
  const repository = ctx('repository');
  const connectionArn = ctx('connectionArn');
  const codeCommit = ctx('codeCommitRepository');
  if (repository && connectionArn) source = { kind: 'connection', repository, branch, connectionArn };
  else if (codeCommit) source = { kind: 'codecommit', repository: codeCommit, branch };
  else
    throw new Error(
      'the pipeline needs its source: -c repository=owner/rendezvous -c connectionArn=arn:aws:codeconnections:… ' +
        '(a connection to GitHub, GitLab or Bitbucket), or -c codeCommitRepository=rendezvous (CodeCommit takes no new ' +
        'customers: only for accounts that already use it); -c branch=main by default',
    );
  const canary = ctx('canaryRegion') ?? plan.home;
  if (!plan.regions.includes(canary))
    throw new Error(`canaryRegion ${canary} is not one of regions (${plan.regions.join(',')})`);
  const approval = ctx('canaryApproval');
  return {
    account,
    region: ctx('pipelineRegion') ?? plan.home,
    source,
    canary,
    wave: plan.regions.filter((r) => r !== canary),
    bakeMinutes: minutes(ctx('bakeMinutes'), 'bakeMinutes', 15),
    waveBakeMinutes: minutes(ctx('waveBakeMinutes'), 'waveBakeMinutes', 5),
    canaryApproval: approval === 'true',
    smokeUuid: ctx('smokeUuid') ?? 'rendezvous-smoke',
    smokeSecretName: ctx('smokeSecretName') ?? 'rendezvous/smoke',
  };
}

/**
 * cdk-nag over a stage. The pipeline synthesises each stage on its own when it is added, and a
 * stage's synthesis applies only the stage's own aspects, not the app's: each stage gets its own.
 */
function nag(stage: Stage): void {
  Aspects.of(stage).add(new AwsSolutionsChecks({ verbose: true }));
}

/** The table stack as a pipeline stage. */
export class TableStage extends Stage {
  readonly stack: TableStack;

  constructor(scope: Construct, id: string, props: StageProps & { plan: DeploymentPlan; account: string }) {
    super(scope, id, props);
    this.stack = new TableStack(this, TABLE_STACK, tableStackProps(props.plan, props.account));
    nag(this);
  }
}

/** One region's service stack as a pipeline stage. */
export class RegionStage extends Stage {
  readonly stack: RendezvousStack;

  constructor(
    scope: Construct,
    id: string,
    props: StageProps & { plan: DeploymentPlan; region: string; account: string },
  ) {
    super(scope, id, props);
    this.stack = new RendezvousStack(
      this,
      regionStackName(props.region),
      regionStackProps(props.plan, props.region, props.account),
    );
    nag(this);
  }
}

/** cdk.json's context as committed (what the pipeline's own synth reads). */
function committedContext(): Record<string, unknown> {
  try {
    return (
      (
        JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as {
          context?: Record<string, unknown>;
        }
      ).context ?? {}
    );
  } catch {
    return {};
  }
}

/** Single-quotes a value for sh. */
const sh = (v: string): string => `'${v.replaceAll("'", "'\\''")}'`;

/**
 * The alarm gate's script: lists the region's alarms (by their name prefix) in ALARM every
 * minute for `bakeMinutes`, failing at the first, with their names. 0 minutes: one look.
 */
export function alarmGateCommands(region: string, bakeMinutes: number): string[] {
  const prefix = alarmPrefixOf(region);
  const names = "join(', ', [MetricAlarms[].AlarmName, CompositeAlarms[].AlarmName][])";
  return [
    [
      `end=$(( $(date +%s) + ${bakeMinutes * 60} ));`,
      'while :; do',
      `firing=$(aws cloudwatch describe-alarms --region ${region} --alarm-name-prefix ${sh(prefix)} --state-value ALARM` +
        ` --alarm-types MetricAlarm CompositeAlarm --query "${names}" --output text) || exit 2;`,
      `if [ -n "$firing" ] && [ "$firing" != None ]; then echo "not promoting ${region}: alarms in ALARM: $firing"; exit 1; fi;`,
      'if [ "$(date +%s)" -ge "$end" ]; then break; fi;',
      'sleep 60;',
      'done',
    ].join(' '),
    `echo "${region}: no alarm in ALARM for ${bakeMinutes} minutes"`,
  ];
}

/** The smoke test's command (`rendezvous smoke`, the secret from the environment only). */
export const SMOKE_COMMANDS = [
  'npm ci',
  'npm run build',
  'node bin/rendezvous.js smoke --api "$API_URL" --uuid "$SMOKE_UUID" --relay-http "$RELAY_HTTP_URL"',
];

/** The pipeline app: the pipeline stack, its stages, and cdk-nag over all of it. */
export function buildPipelineApp(app: App = new App()): {
  app: App;
  pipelineStack: Stack;
  pipeline: CodePipeline;
  table: TableStage;
  canary: RegionStage;
  wave: RegionStage[];
} {
  const get = (key: string) => app.node.tryGetContext(key);
  const plan = planFromContext(get);
  const pp = pipelinePlanFromContext(get, plan);
  bundleRelayUnlessSkipped(app);
  Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));

  const pipelineStack = new Stack(app, PIPELINE_STACK, {
    env: { account: pp.account, region: pp.region },
    description: 'rendezvous: the release pipeline (table, canary region, bake, the other regions)',
  });
  const input =
    pp.source.kind === 'connection'
      ? CodePipelineSource.connection(pp.source.repository, pp.source.branch, {
          connectionArn: pp.source.connectionArn,
        })
      : CodePipelineSource.codeCommit(
          Repository.fromRepositoryName(pipelineStack, 'Source', pp.source.repository),
          pp.source.branch,
        );
  // The synth step reads cdk.json from the repository, so a committed change (a new region)
  // takes effect on the next push. Only what was given here beyond cdk.json is written into the
  // step; it stays until the pipeline is deployed again by hand.
  const committed = committedContext();
  const passed = PASSED_CONTEXT.filter(
    (k) => get(k) !== undefined && get(k) !== '' && String(get(k)) !== String(committed[k] ?? ''),
  )
    .map((k) => `-c ${sh(`${k}=${String(get(k))}`)}`)
    .join(' ');
  const pipeline = new CodePipeline(pipelineStack, 'Pipeline', {
    pipelineName: 'rendezvous',
    crossAccountKeys: false,
    // Synth only stages the relay image's build context (esbuild bundles locally); the image is
    // built in the Assets stage, whose projects CDK Pipelines gives Docker itself.
    dockerEnabledForSynth: false,
    dockerEnabledForSelfMutation: false,
    cliVersion: CDK_CLI_VERSION,
    cdkAssetsCliVersion: CDK_ASSETS_VERSION,
    codeBuildDefaults: {
      buildEnvironment: { buildImage: LinuxBuildImage.STANDARD_7_0, computeType: ComputeType.SMALL },
      // The image offers several Node.js versions; every step runs the one the project is built for.
      partialBuildSpec: BuildSpec.fromObject({
        phases: { install: { 'runtime-versions': { nodejs: BUILD_NODE } } },
      }),
    },
    synth: new ShellStep('Synth', {
      input,
      commands: ['npm ci', `npx cdk synth -c pipeline=true ${passed}`.trim()],
      primaryOutputDirectory: 'cdk.out',
    }),
  });

  const table = new TableStage(app, 'Table', {
    env: { account: pp.account, region: plan.home },
    plan,
    account: pp.account,
  });
  pipeline.addStage(table);

  const region = (r: string) =>
    new RegionStage(app, `Region-${r}`, {
      env: { account: pp.account, region: r },
      plan,
      region: r,
      account: pp.account,
    });
  const checks = (stage: RegionStage, bake: number): Step[] => {
    const r = stage.stack.region;
    const identity = smokeIdentity(pp, r);
    const smoke = new CodeBuildStep(`Smoke-${r}`, {
      input,
      commands: SMOKE_COMMANDS,
      env: { SMOKE_UUID: identity.uuid },
      envFromCfnOutputs: {
        API_URL: stage.stack.api.urlOutput,
        RELAY_HTTP_URL: stage.stack.relay.httpUrlOutput,
      },
      buildEnvironment: {
        environmentVariables: {
          RENDEZVOUS_SECRET: {
            type: BuildEnvironmentVariableType.SECRETS_MANAGER,
            value: identity.secretName,
          },
        },
      },
      timeout: Duration.minutes(20),
    });
    const gate = new CodeBuildStep(`AlarmGate-${r}`, {
      commands: alarmGateCommands(r, bake),
      rolePolicyStatements: [
        new PolicyStatement({ actions: ['cloudwatch:DescribeAlarms'], resources: ['*'] }),
      ],
      timeout: Duration.minutes(bake + 15),
    });
    // The bake starts after the smoke test: its traffic is part of what the alarms watch.
    gate.addStepDependency(smoke);
    return [smoke, gate];
  };

  const canary = region(pp.canary);
  const canarySteps = checks(canary, pp.bakeMinutes);
  if (pp.canaryApproval) {
    const approval = new ManualApprovalStep(`Promote-${pp.canary}`, {
      comment: `Canary ${pp.canary} passed its smoke test and ${pp.bakeMinutes}-minute bake: promote to ${pp.wave.join(', ') || 'no other region'}?`,
    });
    approval.addStepDependency(canarySteps[1] as Step);
    canarySteps.push(approval);
  }
  pipeline.addStage(canary, { post: canarySteps });

  const wave = pp.wave.map(region);
  if (wave.length > 0) {
    const w = pipeline.addWave('Wave');
    for (const stage of wave) w.addStage(stage, { post: checks(stage, pp.waveBakeMinutes) });
  }

  // Built now (not at synthesis) so the generated support stacks exist for their suppressions.
  pipeline.buildPipeline();
  if (pp.source.kind === 'connection') allowBothConnectionPrefixes(pipeline, pp.source.connectionArn);
  suppressPipelineFindings(pipelineStack);
  for (const { stack } of Object.values(pipeline.pipeline.crossRegionSupport))
    if (stack !== pipelineStack) NagSuppressions.addStackSuppressions(stack, [ARTIFACT_BUCKET_LOGS]);
  return { app, pipelineStack, pipeline, table, canary, wave };
}

/**
 * The source action's role gets `UseConnection` under both service prefixes. CDK grants only
 * `codestar-connections:`, but AWS matches the action's prefix to the connection ARN's, and
 * connections created since the rename have `arn:aws:codeconnections:…` ARNs (older ones keep
 * `codestar-connections`); with both, either kind of ARN works.
 */
function allowBothConnectionPrefixes(pipeline: CodePipeline, connectionArn: string): void {
  const roles = pipeline.pipeline.node
    .findAll()
    .filter(
      (c): c is Role => c instanceof Role && /\/Source\/[^/]+\/CodePipelineActionRole$/.test(c.node.path),
    );
  if (roles.length === 0) throw new Error('no source action role found for the connection grant');
  for (const role of roles)
    role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['codestar-connections:UseConnection', 'codeconnections:UseConnection'],
        resources: [connectionArn],
      }),
    );
}

/** Artifact buckets (the pipeline's and its cross-region replicas) keep no access logs. */
const ARTIFACT_BUCKET_LOGS = {
  id: 'AwsSolutions-S1',
  reason:
    'Pipeline artifact buckets hold only the source snapshot and synthesised templates, written and read by the pipeline roles; CloudTrail records who touches them, and a log bucket per region would need its own logs.',
};

/** The pipeline stack's acknowledged cdk-nag findings, each with its reason. */
function suppressPipelineFindings(stack: Stack): void {
  NagSuppressions.addStackSuppressions(stack, [
    ARTIFACT_BUCKET_LOGS,
    {
      id: 'AwsSolutions-CB4',
      reason:
        'Build outputs are the public source and CloudFormation templates, kept in the artifact bucket with S3-managed encryption; no secret is in them (the smoke secret is read from Secrets Manager at run time), so a customer-managed key would protect nothing more.',
    },
    {
      id: 'AwsSolutions-IAM5',
      reason:
        'Generated by CDK Pipelines and scoped as far as the services allow: objects under the artifact bucket (and its cross-region replicas), log groups and report groups named after each CodeBuild project, the bootstrap roles cdk deploy assumes (role/* with the aws-cdk:bootstrap-role tag condition), and cloudwatch:DescribeAlarms, a read-only list that takes no resource scope.',
    },
  ]);
}
