/**
 * The client package as a user gets it: `npm pack` of packages/client (its prepack builds it),
 * installed from the tarball into an empty folder with npm, the way the README says. Shared by
 * the package tests and `npm run bench`.
 */
import { execFile } from 'node:child_process';
import { lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The repository root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The client package's folder and name. */
export const CLIENT_DIR = join(ROOT, 'packages/client');
export const CLIENT_NAME = '@rendezvous-relay/client';

/**
 * npm's environment without what `npm test` puts there for the repository's own package (its
 * lifecycle and package fields), so a nested npm acts on the folder it is run in.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_(lifecycle|package|command|config_(workspace|workspaces|include_workspace_root))/i.test(k))
      continue;
    if (k === 'INIT_CWD') continue;
    env[k] = v;
  }
  env.npm_config_update_notifier = 'false';
  env.npm_config_fund = 'false';
  env.npm_config_audit = 'false';
  return env;
}

/** Runs npm with `args` in `cwd`; resolves with stdout. */
export async function npm(args: string[], cwd: string, timeout = 180_000): Promise<string> {
  const { stdout } = await run('npm', args, { cwd, env: npmEnv(), timeout, maxBuffer: 16 * 2 ** 20 });
  return stdout;
}

/** What `npm pack --json` reports of the tarball. */
export interface Packed {
  tarball: string;
  files: string[];
  /** Size of the tarball, bytes. */
  size: number;
}

/** Packs the client package into `dir` (prepack builds dist/ first). */
export async function packClient(dir: string): Promise<Packed> {
  const out = await npm(['pack', CLIENT_DIR, '--pack-destination', dir, '--json'], ROOT);
  // npm prints the build's output before the JSON when prepack runs in the foreground.
  const json = JSON.parse(out.slice(out.indexOf('[\n'))) as Array<{
    filename: string;
    size: number;
    files: Array<{ path: string }>;
  }>;
  const p = json[0];
  if (!p) throw new Error(`npm pack reported nothing: ${out}`);
  return { tarball: join(dir, p.filename), files: p.files.map((f) => f.path).sort(), size: p.size };
}

/**
 * Installs `tarball` into a fresh `app` folder under `dir` (an empty package.json first, as
 * `npm init -y` would leave), offline: the package has no dependencies, so a tarball copied to a
 * machine without the registry installs. Resolves with the app folder.
 */
export async function installTarball(tarball: string, dir: string): Promise<string> {
  const app = join(dir, 'app');
  mkdirSync(app, { recursive: true });
  writeFileSync(join(app, 'package.json'), '{ "name": "app", "version": "1.0.0", "private": true }\n');
  await npm(['install', '--offline', '--no-audit', '--no-fund', tarball], app);
  return app;
}

/** What an installed tree holds: packages (name@version), bytes on disk, and install scripts. */
export interface TreeStats {
  packages: string[];
  bytes: number;
  installScripts: string[];
}

/** Walks `nodeModules`: every package (nested ones too), the bytes of every file, and install scripts. */
export function treeStats(nodeModules: string): TreeStats {
  const stats: TreeStats = { packages: [], bytes: 0, installScripts: [] };
  const sizeOf = (path: string): number => {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) return 0;
    if (!st.isDirectory()) return st.size;
    let sum = 0;
    for (const e of readdirSync(path)) sum += sizeOf(join(path, e));
    return sum;
  };
  const visitPackage = (dir: string) => {
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
      name: string;
      version: string;
      scripts?: Record<string, string>;
    };
    stats.packages.push(`${pkg.name}@${pkg.version}`);
    for (const s of ['preinstall', 'install', 'postinstall'])
      if (pkg.scripts?.[s]) stats.installScripts.push(`${pkg.name}: ${s}`);
    try {
      visitModules(join(dir, 'node_modules'));
    } catch {
      // no nested node_modules
    }
  };
  const visitModules = (dir: string) => {
    for (const e of readdirSync(dir)) {
      if (e.startsWith('.')) continue;
      if (e.startsWith('@')) for (const s of readdirSync(join(dir, e))) visitPackage(join(dir, e, s));
      else visitPackage(join(dir, e));
    }
  };
  visitModules(nodeModules);
  stats.bytes = sizeOf(nodeModules);
  return stats;
}
