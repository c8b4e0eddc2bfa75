#!/usr/bin/env node
// `npm start`: runs `rendezvous dev` (cli/main.ts under tsx) as a child and makes it stop when the
// start is stopped. npm does not pass SIGTERM on: a process supervisor's SIGTERM ends npm (and
// the shell it ran this through) and leaves its children running with their ports bound. So
// signals that reach this process are passed on, and the death of npm is noticed too: when any
// of the processes that started this one (its parent, and on Linux the parent's parent) is gone,
// the child gets a SIGTERM, as if the supervisor had sent it. Arguments go to `dev` unchanged.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** How often the starters are checked (ms). */
const WATCH_MS = 500;

const root = fileURLToPath(new URL('..', import.meta.url));
const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'dev', ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
});

/** The parent's parent on Linux (npm, when the parent is the shell npm ran this through). */
function grandparent() {
  try {
    const stat = readFileSync(`/proc/${process.ppid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

const starters = [process.ppid, grandparent()].filter((pid) => pid !== undefined && pid > 1);
const gone = (pid) => {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return err.code === 'ESRCH';
  }
};

let stopping = false;
const stop = (signal) => {
  if (stopping && signal === 'SIGTERM') return;
  stopping = true;
  if (child.exitCode === null && child.signalCode === null) child.kill(signal);
};
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => stop(signal));
const watch = setInterval(() => {
  if (process.ppid !== starters[0] || starters.some(gone)) stop('SIGTERM');
}, WATCH_MS);

child.on('exit', (code, signal) => {
  clearInterval(watch);
  process.exitCode = code ?? (signal ? 128 : 1);
});
