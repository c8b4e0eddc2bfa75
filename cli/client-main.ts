/**
 * The client package's `rendezvous` command: only what a hidden or mobile machine runs
 * (`expose`, `connect`), bundled into one file (packages/client/dist/cli.cjs) that starts
 * without tsx, the store or the AWS SDK.
 */
import { addConnectCommand, addExposeCommand } from './client-commands.js';
import { newProgram, runProgram } from './program.js';

/** Builds the client's command tree. */
export function buildClientCli() {
  const program = newProgram(
    'rendezvous',
    'Reach hidden servers behind NAT through a rendezvous relay: expose a local service (hidden side) or connect to one (mobile side)',
  );
  addExposeCommand(program);
  addConnectCommand(program);
  return program;
}

// runProgram handles every error itself (one line, exit 1 or 2); CommonJS has no top-level await.
void runProgram(buildClientCli(), process.argv);
