// Bundles the Lambda handlers, the relay and the CLI with esbuild into dist/.
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

// Paths below are the repository's: the client package's prepack runs this from packages/client.
process.chdir(fileURLToPath(new URL('..', import.meta.url)));
const rootVersion = JSON.parse(readFileSync('package.json', 'utf8')).version;

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  minify: true,
  sourcemap: 'linked',
  // Some dependencies are CommonJS and call require(); give ESM bundles one.
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
  logLevel: 'info',
  // `--version` of a bundled CLI (cli/program.ts reads package.json when run from source).
  define: { RENDEZVOUS_VERSION: JSON.stringify(rootVersion) },
};

// `node scripts/build.mjs relay` builds only the relay (what the CDK app needs for the image);
// `client` only the client package (which a plain build leaves alone, see below).
const only = process.argv[2];

if (!only || only === 'functions')
  await build({
    ...common,
    entryPoints: { register: 'functions/register.ts', lookup: 'functions/lookup.ts' },
    // ES modules first, as the CDK's NodejsFunction bundles them (infra/constructs/function.ts):
    // the SDK's ES build tree-shakes (about 400 KB against 600 KB from its CommonJS build), which
    // Node compiles and runs at every cold start.
    mainFields: ['module', 'main'],
    // Lambda's credentials are in the environment: the SDK's full chain stays out (see the file).
    alias: { '@aws-sdk/credential-provider-node': './functions/lambda-credentials.ts' },
    outdir: 'dist/functions',
    outExtension: { '.js': '.mjs' },
  });
if (!only || only === 'relay')
  await build({
    ...common,
    entryPoints: { relay: 'relay/main.ts' },
    outdir: 'dist',
    outExtension: { '.js': '.mjs' },
  });
if (!only || only === 'cli')
  await build({
    ...common,
    entryPoints: { cli: 'cli/main.ts' },
    // dynalite loads a native LevelDB addon at run time; the CLI uses the installed package.
    external: ['dynalite'],
    outdir: 'dist',
    outExtension: { '.js': '.mjs' },
  });

// The library entry (package root): dependencies stay external, the application installs them.
if (!only || only === 'library')
  await build({
    ...common,
    entryPoints: { index: 'index.ts' },
    outdir: 'dist',
    outExtension: { '.js': '.mjs' },
    packages: 'external',
    minify: false,
    banner: undefined,
  });

// The client package (packages/client): the library as ESM and CommonJS, its declarations, and
// the `expose`/`connect` CLI as one file that starts without tsx.
// Only on request (`node scripts/build.mjs client`: the root's `npm run build`, the package's own
// build and prepack): a plain bundle build (test/scripts/build.test.ts) must never rewrite
// packages/client/dist while a test packs it.
if (only === 'client') {
  const out = 'packages/client/dist';
  rmSync(out, { recursive: true, force: true });
  const { version } = JSON.parse(readFileSync('packages/client/package.json', 'utf8'));
  // Everything but Node's own modules is bundled (otpauth's Node build is one file over
  // node:crypto): the package has no dependencies, so a tarball copied to a machine installs
  // without the registry, and nothing else lands in node_modules.
  const library = {
    ...common,
    entryPoints: ['./index.ts'],
    absWorkingDir: process.cwd(),
    minify: false,
    sourcemap: false,
    banner: undefined,
    metafile: true,
  };
  const bundled = [
    await build({ ...library, outfile: `${out}/index.mjs` }),
    await build({ ...library, format: 'cjs', outfile: `${out}/index.cjs` }),
  ];
  bundled.push(
    await build({
      ...common,
      entryPoints: ['./cli/client-main.ts'],
      absWorkingDir: process.cwd(),
      // One CommonJS file with everything in it (otpauth too): every ssh ProxyCommand pays this
      // start-up, and Node 20 loads one CommonJS file about 15 ms sooner than ESM plus a package.
      format: 'cjs',
      sourcemap: false,
      define: { RENDEZVOUS_VERSION: JSON.stringify(version) },
      // cli/program.ts reads package.json through import.meta only when the version is not defined.
      logOverride: { 'empty-import-meta': 'silent' },
      banner: { js: '#!/usr/bin/env node' },
      outfile: `${out}/cli.cjs`,
      metafile: true,
    }),
  );
  chmodSync(`${out}/cli.cjs`, 0o755);
  // The licences of the packages bundled in (their notices must travel with the code).
  const packages = new Set();
  for (const { metafile } of bundled)
    for (const input of Object.keys(metafile.inputs)) {
      const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
      if (m) packages.add(m[1]);
    }
  const notices = [...packages].sort().map((name) => {
    const dir = join('node_modules', name);
    const { version, license } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    const file = readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
    const text = file ? readFileSync(join(dir, file), 'utf8').trim() : `${license}`;
    return `## ${name} ${version} (${license})\n\n${text}\n`;
  });
  // The project's own licence, at the package root where npm always packs it (a build product,
  // not a tracked copy: the root LICENSE stays the one text).
  copyFileSync('LICENSE', 'packages/client/LICENSE');
  writeFileSync(
    `${out}/THIRD-PARTY-LICENSES.md`,
    `# Code bundled into this package\n\n${notices.join('\n')}`,
  );
  // Declarations from tsc (only index.ts and what it imports: never the store or the SDK), then a
  // CommonJS twin of each (.d.cts importing .cjs) so `require` consumers get CommonJS types.
  execFileSync(join('node_modules', '.bin', 'tsc'), ['-p', 'packages/client/tsconfig.json'], {
    stdio: 'inherit',
  });
  const types = `${out}/types`;
  for (const file of readdirSync(types, { recursive: true })) {
    if (!String(file).endsWith('.d.ts')) continue;
    const path = join(types, String(file));
    const text = readFileSync(path, 'utf8').replace(/(['"])(\.{1,2}\/[^'"]+)\.js\1/g, '$1$2.cjs$1');
    writeFileSync(path.replace(/\.d\.ts$/, '.d.cts'), text);
  }
}
