/**
 * Where `rendezvous dev` keeps its store: a folder of its own, claimed with a pid file so that a
 * second `dev` on the same folder stops with a clear message instead of corrupting or crashing
 * on the embedded store's lock.
 */
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The default folder, relative to the current directory. */
export const DEFAULT_DATA_DIR = '.rendezvous';

const PID_FILE = 'dev.pid';

/** Another process holds the folder. */
export class DataDirInUse extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    super(
      `${dir} is in use by another rendezvous dev (pid ${pid}); stop it, or give this one --data DIR or --memory`,
    );
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Creates `dir` (absolute afterwards) and claims it for this process until it exits. Throws
 * DataDirInUse when a live process holds it; a pid file left by a dead one is taken over.
 */
export function claimDataDir(dir: string): string {
  const abs = resolve(dir);
  mkdirSync(abs, { recursive: true });
  const pidFile = join(abs, PID_FILE);
  let holder = 0;
  try {
    holder = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    // no pid file: free
  }
  if (holder && holder !== process.pid && alive(holder)) throw new DataDirInUse(abs, holder);
  writeFileSync(pidFile, String(process.pid));
  process.once('exit', () => {
    try {
      if (Number(readFileSync(pidFile, 'utf8').trim()) === process.pid) unlinkSync(pidFile);
    } catch {
      // already gone
    }
  });
  return abs;
}
