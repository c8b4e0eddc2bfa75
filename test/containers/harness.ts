/**
 * Container harness: builds the relay image from the Docker asset `cdk synth` staged in cdk.out
 * (the very context and Dockerfile `cdk deploy` would build and push), and a dynalite store image,
 * with testcontainers, and runs them with host networking (every address is 127.0.0.1); relays
 * run as the synthesised task definition runs them (read-only root filesystem, nofile limit,
 * environment). No
 * registry is needed when NODE_IMAGE names a local base (see node-base.sh; .ci/run builds one),
 * passed as the Dockerfile's build argument; without it the public Node 22 default is pulled, as
 * on a developer's laptop.
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { GenericContainer, StartedTestContainer } from 'testcontainers';

const run = promisify(execFile);

// No registry here: testcontainers must not pull its ryuk/alpine helpers. Set before it loads.
process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
process.env.TESTCONTAINERS_HOST_OVERRIDE ??= '127.0.0.1';
const tc = () => import('testcontainers');
/** The repository root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HERE = dirname(fileURLToPath(import.meta.url));

/** Fails with instructions when no Docker engine answers. */
export async function requireDocker(): Promise<void> {
  try {
    await run('docker', ['info'], { timeout: 20_000 });
  } catch {
    throw new Error(
      'No Docker engine answers. Start one (Docker Desktop, or `apt-get install -y docker.io && dockerd &`), ' +
        'then run the tests again. .ci/run does this on CI machines.',
    );
  }
}

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/** dynalite and the packages it needs, found the way Node would find them. */
function dependencyClosure(
  name: string,
  from: string,
  seen = new Map<string, string>(),
): Map<string, string> {
  let dir = from;
  for (;;) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) {
      if (seen.has(candidate)) return seen;
      seen.set(candidate, candidate.slice(ROOT.length));
      const pkg = JSON.parse(readFileSync(join(candidate, 'package.json'), 'utf8'));
      for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
        dependencyClosure(dep, candidate, seen);
      }
      return seen;
    }
    const parent = dirname(dir);
    if (parent === dir) return seen;
    dir = parent;
  }
}

/**
 * The base image for both builds. On Linux, unless RENDEZVOUS_PULL_BASE=1, a local base made from
 * this machine's node (node-base.sh), so nothing is pulled; elsewhere (Docker Desktop on a Mac)
 * the Dockerfiles' public Node 22 default.
 */
async function baseImage(): Promise<Record<string, string>> {
  if (process.env.NODE_IMAGE) return { NODE_IMAGE: process.env.NODE_IMAGE };
  if (process.platform !== 'linux' || process.env.RENDEZVOUS_PULL_BASE === '1') return {};
  const { stdout } = await run('bash', [join(HERE, 'node-base.sh')], { timeout: 120_000 });
  return { NODE_IMAGE: stdout.trim() };
}

/** The relay's Docker image asset as `cdk synth` staged it. */
export interface StagedRelayImage {
  /** How the task definition runs it (read from the same synthesis). */
  task: TaskSettings;
  /**
   * The nofile limit the containers here run with: the task's, unless this machine's hard limit
   * is lower (Docker cannot raise a container above its daemon's), then that one, with a warning.
   */
  nofile: number;
  /** The asset hash (the image tag `cdk deploy` pushes). */
  hash: string;
  /** The staged build context inside cdk.out, and the Dockerfile within it. */
  directory: string;
  dockerFile: string;
  /** Build arguments the asset carries (none unless the nodeImage context is set). */
  buildArgs: Record<string, string>;
}

/**
 * Runs `npx cdk synth` on this tree as an operator would (offline: no AWS credentials, no Docker
 * needed, no telemetry) into `cdk.out`, and returns the relay image asset it staged.
 */
export async function synthRelayAsset(outdir = join(ROOT, 'cdk.out')): Promise<StagedRelayImage> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('AWS_') && !k.startsWith('CDK_')) env[k] = v;
  await run('npx', ['cdk', 'synth', '--no-notices', '-q', '-o', outdir], {
    cwd: ROOT,
    env: { ...env, CDK_DISABLE_CLI_TELEMETRY: 'true', CDK_DOCKER: '/bin/false' },
    timeout: 300_000,
    maxBuffer: 16 << 20,
  });
  const assets = JSON.parse(readFileSync(join(outdir, 'Rendezvous-us-east-1.assets.json'), 'utf8')) as {
    dockerImages: Record<
      string,
      { source: { directory: string; dockerFile: string; dockerBuildArgs?: Record<string, string> } }
    >;
  };
  const images = Object.entries(assets.dockerImages);
  if (images.length !== 1) throw new Error(`expected one Docker image asset, found ${images.length}`);
  const [hash, { source }] = images[0] as (typeof images)[number];
  const task = taskDefinitionOf(readFileSync(join(outdir, 'Rendezvous-us-east-1.template.json'), 'utf8'));
  const ceiling = await hostNofileCeiling();
  if (ceiling < task.nofile)
    console.warn(
      `relay containers run with nofile ${ceiling}, this machine's hard limit, not the task's ${task.nofile}`,
    );
  return {
    task,
    nofile: Math.min(task.nofile, ceiling),
    hash,
    directory: join(outdir, source.directory),
    dockerFile: source.dockerFile,
    buildArgs: source.dockerBuildArgs ?? {},
  };
}

/**
 * Builds the relay image from the asset `cdk synth` staged (see synthRelayAsset) with the local
 * base as NODE_IMAGE, and the store image. Returns the staged asset too.
 */
export async function buildImages(): Promise<{
  relay: GenericContainer;
  store: GenericContainer;
  asset: StagedRelayImage;
}> {
  await requireDocker();
  const { GenericContainer } = await tc();
  const args = await baseImage();
  const asset = await synthRelayAsset();
  const built = await GenericContainer.fromDockerfile(asset.directory, asset.dockerFile)
    .withBuildArgs({ ...asset.buildArgs, ...args })
    .build(`rendezvous-relay:asset-${asset.hash.slice(0, 12)}`, { deleteOnExit: false });
  const relay = asTheTaskRunsIt(built, asset.task, asset.nofile);
  const context = mkdtempSync(join(tmpdir(), 'rendezvous-store-'));
  cpSync(join(HERE, 'store'), context, { recursive: true });
  for (const [abs, rel] of dependencyClosure('dynalite', ROOT))
    cpSync(abs, join(context, rel), { recursive: true });
  const store = await GenericContainer.fromDockerfile(context)
    .withBuildArgs(args)
    .build('rendezvous-store:test', { deleteOnExit: false });
  return { relay, store, asset };
}

/**
 * The relay image set up as its task definition runs it: the root filesystem read-only (a write
 * anywhere fails, as on Fargate), the task's nofile limit, and its literal environment, under
 * what each test sets (startRelay: ports, address, store).
 */
function asTheTaskRunsIt(image: GenericContainer, task: TaskSettings, nofile: number): GenericContainer {
  const env = Object.fromEntries(Object.entries(task.environment).filter(([k]) => !HOST_SPECIFIC.has(k)));
  const container = image.withEnvironment(env).withUlimits({ nofile: { soft: nofile, hard: nofile } });
  // testcontainers has no setter for it; its host config is what Docker receives.
  const hostConfig = (container as unknown as { hostConfig: { ReadonlyRootfs?: boolean } }).hostConfig;
  hostConfig.ReadonlyRootfs = task.readonlyRootFilesystem;
  return container;
}

/** Starts the store container on `port`. */
export async function startStore(image: GenericContainer, port: number): Promise<StartedTestContainer> {
  const { Wait } = await tc();
  return image
    .withNetworkMode('host')
    .withEnvironment({ STORE_PORT: String(port) })
    .withWaitStrategy(Wait.forLogMessage(/store listening/))
    .withStartupTimeout(30_000)
    .start();
}

/** What the relay task definition (in the synthesised template) runs the container with. */
export interface TaskSettings {
  /** The container's environment variables whose values are literals (tokens such as the NLB's name left out). */
  environment: Record<string, string>;
  nofile: number;
  readonlyRootFilesystem: boolean;
}

/** The relay container's settings from a region stack's template (JSON text). */
export function taskDefinitionOf(template: string): TaskSettings {
  interface Container {
    Environment?: Array<{ Name: string; Value: unknown }>;
    Ulimits?: Array<{ Name: string; HardLimit: number }>;
    ReadonlyRootFilesystem?: boolean;
  }
  const resources = (
    JSON.parse(template) as {
      Resources: Record<string, { Type: string; Properties: { ContainerDefinitions?: Container[] } }>;
    }
  ).Resources;
  const task = Object.values(resources).find((r) => r.Type === 'AWS::ECS::TaskDefinition');
  const container = task?.Properties.ContainerDefinitions?.[0];
  if (!container) throw new Error('no relay task definition in the template');
  const environment: Record<string, string> = {};
  for (const { Name, Value } of container.Environment ?? [])
    if (typeof Value === 'string') environment[Name] = Value;
  const nofile = (container.Ulimits ?? []).find((u) => u.Name === 'nofile');
  return {
    environment,
    nofile: nofile?.HardLimit ?? 0,
    readonlyRootFilesystem: container.ReadonlyRootFilesystem === true,
  };
}

/**
 * Variables this machine sets itself: every container shares the host's network (its own ports,
 * 127.0.0.1), and the store is a local container, not the deployed table.
 */
export const HOST_SPECIFIC = new Set([
  'RELAY_BIND',
  'RELAY_PORT',
  'RELAY_HTTP_PORT',
  'RELAY_PEER_PORT',
  'RELAY_HEALTH_PORT',
  'RENDEZVOUS_TABLE',
]);

/** This machine's hard open-file limit (what a container may be given at most). */
export async function hostNofileCeiling(): Promise<number> {
  const { stdout } = await run('sh', ['-c', 'ulimit -Hn'], { timeout: 10_000 });
  const n = Number(stdout.trim());
  return Number.isInteger(n) && n > 0 ? n : Number.POSITIVE_INFINITY;
}

/** Ports of one relay container. */
export interface RelayPorts {
  generic: number;
  http: number;
  peer: number;
  health: number;
}

/** Starts a relay container: host networking, its own ports, the shared store and cluster secret. */
export async function startRelay(
  image: GenericContainer,
  opts: { storeEndpoint: string; table: string; secret: string; env?: Record<string, string> },
): Promise<{ container: StartedTestContainer; ports: RelayPorts; startMs: number }> {
  // A port freePort() saw free can be taken by another test file's listener before the relay
  // binds it (host networking, files in parallel): the relay then exits at start. Try again on
  // fresh ports, and say so, rather than fail a test about something else.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRelayOnce(image, opts);
    } catch (err) {
      if (attempt >= 3) throw err;
      const last = (await docker('ps', '-a', '-l', '-q').catch(() => '')).trim();
      const logs = last ? await docker('logs', '--tail', '5', last).catch(() => '') : '';
      console.warn(`relay container did not start (attempt ${attempt}): ${(err as Error).message}\n${logs}`);
    }
  }
}

async function startRelayOnce(
  image: GenericContainer,
  opts: { storeEndpoint: string; table: string; secret: string; env?: Record<string, string> },
): Promise<{ container: StartedTestContainer; ports: RelayPorts; startMs: number }> {
  const { Wait } = await tc();
  const ports: RelayPorts = {
    generic: await freePort(),
    http: await freePort(),
    peer: await freePort(),
    health: await freePort(),
  };
  const started = Date.now();
  const container = await image
    .withNetworkMode('host')
    .withEnvironment({
      AWS_ENDPOINT_URL_DYNAMODB: opts.storeEndpoint,
      AWS_REGION: 'local',
      AWS_ACCESS_KEY_ID: 'local',
      AWS_SECRET_ACCESS_KEY: 'local',
      RENDEZVOUS_TABLE: opts.table,
      RELAY_BIND: '127.0.0.1',
      RELAY_PORT: String(ports.generic),
      RELAY_HTTP_PORT: String(ports.http),
      RELAY_PEER_PORT: String(ports.peer),
      RELAY_HEALTH_PORT: String(ports.health),
      RELAY_PEER_HOST: '127.0.0.1',
      RELAY_CLUSTER_SECRET: opts.secret,
      ...opts.env,
    })
    .withWaitStrategy(Wait.forLogMessage(/relay listening/))
    .withStartupTimeout(30_000)
    .start();
  return { container, ports, startMs: Date.now() - started };
}

/** Runs a docker CLI command (kill, stop, pause, unpause, inspect). */
export async function docker(...args: string[]): Promise<string> {
  const { stdout } = await run('docker', args, { timeout: 60_000 });
  return stdout;
}
