/**
 * `rendezvous relay`: runs the production bundle (dist/relay.mjs) under the same V8 flags as the
 * container (relay/Dockerfile's ENTRYPOINT), so a relay started outside a container costs what the
 * container costs, not what the TypeScript source costs through tsx. Node cannot exec itself, so
 * the relay is a child: signals are passed on, its exit code is this process's, and a launcher that
 * dies (even by SIGKILL) takes the relay with it through the closed IPC channel.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** The node flags of relay/Dockerfile's ENTRYPOINT (between `node` and the script). */
export function containerNodeFlags(dockerfile = join(ROOT, 'relay/Dockerfile')): string[] {
  const entry = /^ENTRYPOINT \[(.*)\]$/m.exec(readFileSync(dockerfile, 'utf8'))?.[1] ?? '';
  return (JSON.parse(`[${entry}]`) as string[]).filter((a) => a.startsWith('--'));
}

/**
 * The glibc settings of relay/Dockerfile's ENV (MALLOC_*): freed heap kept instead of trimmed, so
 * each read's fresh buffer does not re-fault pages (about half the CPU per GiB without them).
 */
export function containerMallocEnv(dockerfile = join(ROOT, 'relay/Dockerfile')): Record<string, string> {
  return Object.fromEntries(
    [...readFileSync(dockerfile, 'utf8').matchAll(/^(?:ENV\s+|\s+)(MALLOC_[A-Z_]+)=(\S+)/gm)].map((m) => [
      m[1] as string,
      m[2] as string,
    ]),
  );
}

/** Runs dist/relay.mjs with the container's flags until it exits; rejects with a one-line reason. */
export async function runProductionRelay(): Promise<number> {
  const bundle = join(ROOT, 'dist/relay.mjs');
  if (bundleStale(bundle)) {
    // A checkout whose relay, server or core changed since the last build: running the old bundle would
    // run code that is not the source in front of the operator.
    try {
      execFileSync(process.execPath, ['scripts/build.mjs', 'relay'], { cwd: ROOT, stdio: 'ignore' });
    } catch {
      throw new Error(
        'dist/relay.mjs is missing or older than relay/, server/ or core/: run `npm run build`',
      );
    }
  }
  const child = spawn(process.execPath, [...containerNodeFlags(), bundle], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    env: { ...containerMallocEnv(), ...process.env },
  });
  const pass = (signal: NodeJS.Signals) => () => child.kill(signal);
  process.on('SIGTERM', pass('SIGTERM'));
  process.on('SIGINT', pass('SIGINT'));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

/** The folders the relay bundle is built from (scripts/build.mjs follows its imports into them). */
const RELAY_SOURCES = ['relay', 'server', 'core'];

/** True when the bundle is missing or older than a source file it is built from (in a checkout). */
export function bundleStale(bundle: string, root = ROOT): boolean {
  if (!existsSync(bundle)) return true;
  const built = statSync(bundle).mtimeMs;
  const newer = (dir: string): boolean =>
    readdirSync(dir, { withFileTypes: true }).some((e) =>
      e.isDirectory()
        ? newer(join(dir, e.name))
        : e.name.endsWith('.ts') && statSync(join(dir, e.name)).mtimeMs > built,
    );
  return RELAY_SOURCES.some((dir) => existsSync(join(root, dir)) && newer(join(root, dir)));
}
