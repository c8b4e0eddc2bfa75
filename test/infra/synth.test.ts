/**
 * `npx cdk synth` as an operator runs it: offline, without AWS credentials, for one region and
 * for two, and without Docker (CDK_DOCKER points at a command that always fails).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('AWS_') && !k.startsWith('CDK_')) env[k] = v;
  return { ...env, CDK_DISABLE_CLI_TELEMETRY: 'true', CDK_DOCKER: '/bin/false' };
}

async function synth(args: string[]) {
  const out = mkdtempSync(join(tmpdir(), 'cdk-out-'));
  try {
    await run('npx', ['cdk', 'synth', '--no-notices', '-q', '-o', out, ...args], {
      env: cleanEnv(),
      timeout: 120_000,
      maxBuffer: 16 << 20,
    });
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as {
      artifacts: Record<string, { type: string }>;
    };
    const stacks = Object.entries(manifest.artifacts)
      .filter(([, a]) => a.type === 'aws:cloudformation:stack')
      .map(([name]) => name)
      .sort();
    const dockerfiles = readFileSync(join(out, `${stacks[0]}.assets.json`), 'utf8');
    return { stacks, dockerfiles, out };
  } finally {
    if (existsSync(out)) rmSync(out, { recursive: true, force: true });
  }
}

describe('cdk synth (the CLI, offline)', () => {
  it('synthesises one region by default', async () => {
    const { stacks, dockerfiles } = await synth([]);
    expect(stacks).toEqual(['Rendezvous-us-east-1']);
    expect(dockerfiles).toContain('"dockerFile": "relay/Dockerfile"');
  }, 120_000);

  it('synthesises one stack per region with -c regions=us-east-1,eu-west-1', async () => {
    const { stacks } = await synth(['-c', 'regions=us-east-1,eu-west-1']);
    expect(stacks).toEqual(['Rendezvous-eu-west-1', 'Rendezvous-us-east-1']);
  }, 120_000);
});
