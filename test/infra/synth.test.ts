/**
 * `npx cdk synth` as an operator runs it: offline, without AWS credentials and without Docker
 * (CDK_DOCKER points at a command that always fails), on a fresh copy of this source tree (no
 * dist/, no cdk.out/), for one region and for three, clean under cdk-nag. And the relay image
 * `cdk deploy` would build: the first synth stages the relay bundle built from this very source,
 * and a source change reaches the staged asset (with a new hash, so ECS rolls) on the next synth.
 */
import { execFile, execFileSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('AWS_') && !k.startsWith('CDK_')) env[k] = v;
  return { ...env, CDK_DISABLE_CLI_TELEMETRY: 'true', CDK_DOCKER: '/bin/false' };
}

/** A fresh copy of the source tree, as a clone has it: tracked and new files, nothing built. */
function freshCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'rendezvous-clone-'));
  const files = execFileSync('git', ['ls-files', '-co', '--exclude-standard', '-z'], { cwd: ROOT })
    .toString()
    .split('\0')
    .filter((f) => f && !/^(dist|cdk\.out|node_modules)(\/|$)/.test(f) && existsSync(join(ROOT, f)));
  for (const f of files) {
    mkdirSync(dirname(join(dir, f)), { recursive: true });
    cpSync(join(ROOT, f), join(dir, f));
  }
  // `npm ci` would install these; the installed tree is the same.
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

interface Synth {
  out: string;
  stacks: string[];
  /** The relay's Docker image asset: its hash, staged directory and Dockerfile. */
  relay: { hash: string; dir: string; dockerFile: string };
}

async function synth(cwd: string, out: string, args: string[] = []): Promise<Synth> {
  await run('npx', ['cdk', 'synth', '--no-notices', '-q', '-o', out, ...args], {
    cwd,
    env: cleanEnv(),
    timeout: 300_000,
    maxBuffer: 16 << 20,
  });
  const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as {
    artifacts: Record<string, { type: string }>;
  };
  const stacks = Object.entries(manifest.artifacts)
    .filter(([, a]) => a.type === 'aws:cloudformation:stack')
    .map(([name]) => name)
    .sort();
  const service = stacks.find((s) => s !== 'Rendezvous-Table') as string;
  const assets = JSON.parse(readFileSync(join(out, `${service}.assets.json`), 'utf8')) as {
    dockerImages: Record<string, { source: { directory: string; dockerFile: string } }>;
  };
  const [[hash, image]] = Object.entries(assets.dockerImages) as [
    [string, { source: { directory: string; dockerFile: string } }],
  ];
  return {
    out,
    stacks,
    relay: { hash, dir: join(out, image.source.directory), dockerFile: image.source.dockerFile },
  };
}

/** cdk-nag's report rows that are neither compliant nor acknowledged with a reason. */
function nagFindings(out: string): string[] {
  return readdirSync(out)
    .filter((f) => f.startsWith('AwsSolutions-') && f.endsWith('-NagReport.csv'))
    .flatMap((f) =>
      readFileSync(join(out, f), 'utf8')
        .split('\n')
        .slice(1)
        .filter((line) => line && !/^"[^"]*","[^"]*","(Compliant|Suppressed)"/.test(line))
        .map((line) => `${f}: ${line}`),
    );
}

const MARKER_LINE = (m: string) => `\n(globalThis as Record<string, unknown>).__stagedMarker = '${m}';\n`;

let clone: string;
let first: Synth;

beforeAll(async () => {
  clone = freshCopy();
  writeFileSync(
    join(clone, 'relay/main.ts'),
    readFileSync(join(clone, 'relay/main.ts'), 'utf8') + MARKER_LINE('marker-A-7f3c'),
  );
  expect(existsSync(join(clone, 'dist'))).toBe(false);
  first = await synth(clone, join(clone, 'cdk.out'));
}, 300_000);

afterAll(() => {
  if (clone) rmSync(clone, { recursive: true, force: true });
});

describe('cdk synth (the CLI, offline, on a fresh copy)', () => {
  it('synthesises the table stack and one region by default, clean under cdk-nag', () => {
    expect(first.stacks).toEqual(['Rendezvous-Table', 'Rendezvous-us-east-1']);
    expect(nagFindings(first.out)).toEqual([]);
  });

  it('stages the relay image context with the bundle of this source, built before staging', () => {
    expect(first.relay.dockerFile).toBe('relay/Dockerfile');
    const staged = readFileSync(join(first.relay.dir, 'dist/relay.mjs'), 'utf8');
    expect(staged.includes('marker-A-7f3c'), 'the staged bundle carries this source').toBe(true);
    // The staged file is exactly what the build script makes of this source now.
    execFileSync(process.execPath, ['scripts/build.mjs', 'relay'], { cwd: clone, stdio: 'ignore' });
    expect(staged === readFileSync(join(clone, 'dist/relay.mjs'), 'utf8'), 'staged = fresh build').toBe(true);
    // The context holds the image's inputs only (.dockerignore), not the repository.
    expect(existsSync(join(first.relay.dir, 'node_modules'))).toBe(false);
    expect(existsSync(join(first.relay.dir, 'relay/Dockerfile'))).toBe(true);
  });

  it('a source change reaches the staged asset on the next synth, under a new hash', async () => {
    const main = join(clone, 'relay/main.ts');
    writeFileSync(main, readFileSync(main, 'utf8').replace('marker-A-7f3c', 'marker-B-91d2'));
    const second = await synth(clone, join(clone, 'cdk.out'));
    expect(second.relay.hash).not.toBe(first.relay.hash);
    const staged = readFileSync(join(second.relay.dir, 'dist/relay.mjs'), 'utf8');
    expect(staged.includes('marker-B-91d2'), 'the staged bundle carries the changed source').toBe(true);
    expect(staged.includes('marker-A-7f3c'), 'the old code is gone').toBe(false);
  }, 300_000);

  it('synthesises the table stack and one stack per region for three regions, each clean under cdk-nag', async () => {
    const three = await synth(clone, join(clone, 'cdk.out.3'), [
      '-c',
      'regions=us-east-1,eu-west-1,ap-southeast-2',
      '-c',
      'relayDomain=relay.{region}.example.com',
    ]);
    expect(three.stacks).toEqual([
      'Rendezvous-Table',
      'Rendezvous-ap-southeast-2',
      'Rendezvous-eu-west-1',
      'Rendezvous-us-east-1',
    ]);
    expect(nagFindings(three.out)).toEqual([]);
    const table = JSON.parse(readFileSync(join(three.out, 'Rendezvous-Table.template.json'), 'utf8'));
    const [gt] = Object.values(table.Resources) as Array<{
      Properties: { Replicas: Array<{ Region: string }> };
    }>;
    expect(gt?.Properties.Replicas.map((r) => r.Region).sort()).toEqual([
      'ap-southeast-2',
      'eu-west-1',
      'us-east-1',
    ]);
  }, 300_000);

  it('synthesises the pipeline app (-c pipeline=true) for three regions with a hosted zone, offline and clean under cdk-nag', async () => {
    const out = join(clone, 'cdk.out.pipeline');
    await run(
      'npx',
      [
        'cdk',
        'synth',
        '--no-notices',
        '-q',
        '-o',
        out,
        ...[
          'pipeline=true',
          'regions=us-east-1,eu-west-1,ap-southeast-2',
          'account=123456789012',
          'repository=acme/rendezvous',
          'connectionArn=arn:aws:codeconnections:us-east-1:123456789012:connection/0000',
          'hostedZoneId=Z0123456789ABCDEFGHIJ',
          'zoneName=example.com',
        ].flatMap((c) => ['-c', c]),
      ],
      { cwd: clone, env: cleanEnv(), timeout: 300_000, maxBuffer: 16 << 20 },
    );
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as {
      artifacts: Record<string, { type: string }>;
    };
    const kinds = Object.entries(manifest.artifacts).map(([name, a]) => `${a.type} ${name}`);
    expect(kinds).toEqual(
      expect.arrayContaining([
        'aws:cloudformation:stack Rendezvous-Pipeline',
        'cdk:cloud-assembly assembly-Table',
        'cdk:cloud-assembly assembly-Region-us-east-1',
        'cdk:cloud-assembly assembly-Region-eu-west-1',
        'cdk:cloud-assembly assembly-Region-ap-southeast-2',
      ]),
    );
    // A report per stack, the stages' included, and nothing unacknowledged in any.
    const reports = readdirSync(out).filter((f) => f.endsWith('-NagReport.csv'));
    expect(reports.length).toBe(7);
    expect(nagFindings(out)).toEqual([]);
  }, 300_000);

  it('refuses at synth, with the fix, what CloudFormation would refuse later', async () => {
    const err = await synth(clone, join(clone, 'cdk.out.bad'), [
      '-c',
      'regions=us-east-1,eu-west-1,ap-southeast-2',
      '-c',
      'deployedRegions=us-east-1',
    ]).then(
      () => undefined,
      (e: { stderr?: string }) => e,
    );
    expect(err?.stderr).toMatch(/one global-table replica per update/);
    // One line for the operator, not a stack trace.
    expect(err?.stderr).not.toMatch(/\n\s+at /);
  }, 300_000);
  it("a relay that does not bundle stops synth with the bundler's message (never a stale image)", async () => {
    const main = join(clone, 'relay/main.ts');
    writeFileSync(main, `${readFileSync(main, 'utf8')}\nconst broken = ;\n`);
    const err = await synth(clone, join(clone, 'cdk.out')).then(
      () => undefined,
      (e: { stderr?: string }) => e,
    );
    expect(err?.stderr).toMatch(
      /bundling the relay \(node scripts\/build\.mjs relay\) failed[\s\S]*relay\/main\.ts/,
    );
  }, 300_000);
});
