#!/usr/bin/env node
// Runs the TypeScript CLI through tsx, so `npx rendezvous` works on a fresh clone without a build.
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('../cli/main.ts');
await runCli(process.argv);
