import { configDefaults, defineConfig } from 'vitest/config';
import LongestFirst from './test/support/sequencer.js';

/**
 * The files that synthesise the CDK app in their own process (Template.fromStack). Each new process
 * pays for loading aws-cdk-lib and for starting CloudFormation's template validator (a WebAssembly
 * engine, seconds of CPU) before its first synth; these files share one process per worker instead
 * (isolate: false), each still building its own App. test/infra/synth.test.ts runs the `cdk` CLI
 * in child processes and stays with the others.
 */
const IN_PROCESS_CDK = ['test/infra/!(synth).test.ts', 'test/localstack/*.test.ts'];

export default defineConfig({
  test: {
    // CI logs name every test (the container suite must visibly run, not be skipped).
    reporters: process.env.CI ? ['verbose'] : ['default'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores, three workers: most files spend their time waiting (rounds, flushes, windows,
    // timeouts), so a third file overlaps those waits (quiet: vitest 539 s with two, 393 s with three).
    pool: 'forks',
    maxWorkers: 3,
    // The longest files start first (test/support/sequencer.ts).
    sequence: { sequencer: LongestFirst },
    // Handler logs are asserted where they matter; elsewhere they only bury the report.
    env: { POWERTOOLS_LOG_LEVEL: 'SILENT' },
    projects: [
      {
        extends: true,
        test: {
          name: 'cdk',
          include: IN_PROCESS_CDK,
          isolate: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'main',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...IN_PROCESS_CDK],
          // Bundles the CLI once for every file that starts it (test/support/global-setup.ts).
          globalSetup: ['test/support/global-setup.ts'],
        },
      },
    ],
  },
});
