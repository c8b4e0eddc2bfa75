/**
 * Once per `vitest run`, before any test file: bundles the `rendezvous` CLI from this source
 * (dist/test-cli.mjs, as scripts/build.mjs bundles dist/cli.mjs). The tests start the CLI a few
 * hundred times; through tsx each start compiles the TypeScript again (about 1.5 s of CPU, 5× the
 * bundle's), which the tests are not about. test/cli/cli-usage.test.ts keeps running
 * bin/rendezvous.js from source, as `npx rendezvous` runs on a fresh clone.
 */
import { readFileSync, renameSync } from 'node:fs';
import { build } from 'esbuild';
import { BUNDLE_BIN, ROOT } from './cli.js';

/** Set for the workers (and a vitest a test starts, which then need not bundle again). */
const READY = 'RENDEZVOUS_TEST_CLI_BUNDLED';

export default async function setup(): Promise<void> {
  if (process.env[READY] === BUNDLE_BIN) return;
  const { version } = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string };
  // Written beside and renamed into place: a second `vitest run` in this checkout may be
  // starting the previous bundle at this moment.
  const tmp = `${BUNDLE_BIN}.${process.pid}.tmp`;
  await build({
    absWorkingDir: ROOT,
    entryPoints: ['cli/main.ts'],
    outfile: tmp,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    // Some dependencies are CommonJS and call require(); give the ESM bundle one.
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    // dynalite loads a native LevelDB addon at run time; the bundle uses the installed package.
    external: ['dynalite'],
    define: { RENDEZVOUS_VERSION: JSON.stringify(version) },
    logLevel: 'warning',
  });
  renameSync(tmp, BUNDLE_BIN);
  process.env[READY] = BUNDLE_BIN;
}
