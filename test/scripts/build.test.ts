/** `npm run build` yields bundles that load in a fresh Node process, as Lambda and the container load them. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);

beforeAll(async () => {
  await run(process.execPath, ['scripts/build.mjs'], { timeout: 60_000 });
}, 90_000);

describe('build', () => {
  it.each(['register', 'lookup'])('the %s Lambda bundle exports a handler', async (name) => {
    const { stdout } = await run(process.execPath, [
      '--input-type=module',
      '-e',
      `const m = await import('./dist/functions/${name}.mjs'); console.log(typeof m.handler);`,
    ]);
    expect(stdout.trim()).toBe('function');
  });

  it('the library bundle (package root) exports the API', async () => {
    const { stdout } = await run(process.execPath, [
      '--input-type=module',
      '-e',
      "const m = await import('./dist/index.mjs'); console.log(Object.keys(m).sort().join(','));",
    ]);
    expect(stdout.trim()).toBe(
      'HiddenServer,RendezvousError,connect,createHiddenServer,exposeHiddenServer,isRendezvousError,rendezvousErrorOf,rendezvousUrl',
    );
  });

  it('the CLI bundle runs', async () => {
    const { stdout } = await run(process.execPath, ['dist/cli.mjs', '--help']);
    expect(stdout).toContain('provision');
    expect(stdout).toContain('expose');
    expect(stdout).toContain('connect');
  });
});
