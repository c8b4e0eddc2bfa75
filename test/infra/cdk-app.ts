/**
 * The CDK app as `cdk synth` builds it: cdk.json's context (feature flags included) under the
 * test's own, and no Lambda bundling (test/infra/synth.test.ts runs the real CLI for that).
 * Without cdk.json's flags a test would assert a different template from the one that deploys.
 */
import { readFileSync } from 'node:fs';
import { App } from 'aws-cdk-lib';
import { buildApp } from '../../infra/app.js';

/** cdk.json's context. */
export const CDK_JSON_CONTEXT = (
  JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')) as {
    context: Record<string, unknown>;
  }
).context;

/** Builds the app with cdk.json's context plus `context`. */
export function synthApp(context: Record<string, unknown> = {}): ReturnType<typeof buildApp> {
  const app = new App({
    context: { ...CDK_JSON_CONTEXT, 'aws:cdk:bundling-stacks': [], skipRelayBuild: 'true', ...context },
  });
  return buildApp(app);
}
