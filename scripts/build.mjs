// Bundles the Lambda handlers, the relay and the CLI with esbuild into dist/.
import { build } from 'esbuild';

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
};

// `node scripts/build.mjs relay` builds only the relay (what the CDK app needs for the image).
const only = process.argv[2];

if (!only || only === 'functions')
  await build({
    ...common,
    entryPoints: { register: 'functions/register.ts', lookup: 'functions/lookup.ts' },
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
