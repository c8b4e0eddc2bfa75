/**
 * cdk.json's entry (`npx tsx infra/main.ts`): builds the plain app (infra/app.ts) or, with
 * `-c pipeline=true`, the CDK Pipelines app (infra/pipeline.ts), and synthesises it.
 */
import { App } from 'aws-cdk-lib';
import { buildApp } from './app.js';
import { buildPipelineApp } from './pipeline.js';

const app = new App();
const pipeline = app.node.tryGetContext('pipeline');
try {
  if (pipeline === true || pipeline === 'true') buildPipelineApp(app).app.synth();
  else buildApp(app).app.synth();
} catch (err) {
  // A context mistake (a missing account, source or region plan) is the operator's to fix: say it
  // in one line, not as a stack trace under the CDK's own error.
  process.stderr.write(`rendezvous: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
