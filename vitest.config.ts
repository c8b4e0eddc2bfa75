import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Bundles the CLI once for every file that starts it (test/support/global-setup.ts).
    globalSetup: ['test/support/global-setup.ts'],
    // CI logs name every test (the container suite must visibly run, not be skipped).
    reporters: process.env.CI ? ['verbose'] : ['default'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: suites that open many sockets run better one file at a time per worker.
    pool: 'forks',
    maxWorkers: 2,
    // Handler logs are asserted where they matter; elsewhere they only bury the report.
    env: { POWERTOOLS_LOG_LEVEL: 'SILENT' },
  },
});
