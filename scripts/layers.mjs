#!/usr/bin/env node
// The layer check `npm test` runs (test/scripts/layers.test.ts): arrows point one way
// (cli → local/admin/client/relay/functions → server → core; client → core), only the store module
// talks to the AWS SDK, infra reads no runtime code but the metric catalogue, no import cycles and
// no product file over MAX_LINES. `node scripts/layers.mjs` prints the violations of this checkout.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Product folders (everything a user runs or deploys); test/ and generated output are not. */
export const PRODUCT = [
  'core',
  'server',
  'client',
  'relay',
  'functions',
  'local',
  'cli',
  'admin',
  'infra',
  'bench',
  'scripts',
  'bin',
  'index.ts',
];

/** A product source file longer than this is two jobs in one file. */
export const MAX_LINES = 450;

/** The only module allowed to import `@aws-sdk/*` (DynamoDB is reached through it alone). */
export const SDK_HOME = 'server/store/';

/** The one runtime module infra may import: data (metric names and units), no behaviour. */
export const INFRA_MAY_IMPORT = ['server/metrics/catalogue.ts'];

/**
 * Which top-level folders each folder may import (its own always). Packages are free but for the
 * SDK rule; `node:` built-ins are free.
 */
export const ALLOWED = {
  core: [],
  server: ['core'],
  client: ['core'],
  functions: ['server', 'core'],
  relay: ['server', 'core'],
  admin: ['server', 'core'],
  local: ['relay', 'functions', 'admin', 'server', 'core'],
  cli: ['local', 'admin', 'client', 'relay', 'functions', 'server', 'core', 'index.ts'],
  'index.ts': ['client', 'core'],
  infra: [],
};

const SOURCE = /\.(ts|mts|mjs|js)$/;
const SPECIFIER =
  /(?:^|[\s;])(?:import|export)\s+(?:type\s+)?(?:[^'"`;]*?\sfrom\s+)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm;

function walk(root, rel, out) {
  const abs = join(root, rel);
  if (statSync(abs).isFile()) {
    if (SOURCE.test(rel) && !rel.endsWith('.d.ts')) out.push(rel);
    return;
  }
  for (const name of readdirSync(abs)) {
    // vendor/: third-party code kept as shipped (bench/original's winston), not ours to split.
    if (
      name === 'node_modules' ||
      name === 'vendor' ||
      name === 'dist' ||
      name === 'cdk.out' ||
      name.startsWith('.')
    )
      continue;
    walk(root, join(rel, name), out);
  }
}

/** The import specifiers of one file's text (static, re-exports, dynamic with a literal). */
export function specifiersOf(text) {
  const noComments = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  return [...noComments.matchAll(SPECIFIER)].map((m) => m[1] ?? m[2]);
}

const top = (rel) => (rel.includes('/') ? rel.slice(0, rel.indexOf('/')) : rel);

/** Resolves a relative specifier of `from` to a repository path, or undefined (a package). */
function resolveLocal(root, from, spec, files) {
  if (!spec.startsWith('.')) return undefined;
  const base = relative(root, resolve(root, dirname(from), spec))
    .split('\\')
    .join('/');
  for (const c of [
    base,
    base.replace(/\.js$/, '.ts'),
    base.replace(/\.mjs$/, '.mts'),
    `${base}.ts`,
    `${base}/index.ts`,
  ])
    if (files.has(c)) return c;
  return base;
}

/** Every violation in the tree at `root`, one line each; empty when the layers hold. */
export function checkLayers(root) {
  const list = [];
  for (const p of PRODUCT) {
    try {
      walk(root, p, list);
    } catch {
      // a folder this tree does not have
    }
  }
  const files = new Set(list);
  const problems = [];
  const graph = new Map();
  for (const file of list) {
    const text = readFileSync(join(root, file), 'utf8');
    const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
    if (lines > MAX_LINES && !file.endsWith('.json'))
      problems.push(`${file}: ${lines} lines (at most ${MAX_LINES})`);
    const from = top(file);
    const edges = [];
    for (const spec of specifiersOf(text)) {
      if (spec.startsWith('@aws-sdk/') && !file.startsWith(SDK_HOME))
        problems.push(`${file}: imports ${spec} (only ${SDK_HOME} may)`);
      const target = resolveLocal(root, file, spec, files);
      if (!target) continue;
      if (files.has(target)) edges.push(target);
      const to = top(target);
      if (to === from) continue;
      const allowed = ALLOWED[from];
      if (!allowed) continue; // bench/, scripts/, bin/: tools, free to use any layer
      if (from === 'infra') {
        if (!INFRA_MAY_IMPORT.includes(target))
          problems.push(`${file}: infra imports runtime code ${target}`);
        continue;
      }
      if (!allowed.includes(to)) problems.push(`${file}: ${from}/ may not import ${target}`);
    }
    graph.set(file, edges);
  }
  for (const cycle of cyclesOf(graph)) problems.push(`import cycle: ${cycle.join(' → ')}`);
  return problems;
}

/** The shortest import path from `start` back to itself inside one strongly connected group. */
function shortestCycle(graph, start, group) {
  const from = new Map([[start, undefined]]);
  const queue = [start];
  while (queue.length) {
    const v = queue.shift();
    for (const w of graph.get(v) ?? []) {
      if (!group.has(w)) continue;
      if (w === start) {
        const path = [start];
        for (let x = v; x !== start; x = from.get(x)) path.splice(1, 0, x);
        return [...path, start];
      }
      if (!from.has(w)) {
        from.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start];
}

/** One cycle per strongly connected group of files (Tarjan), each a real path of imports. */
export function cyclesOf(graph) {
  let index = 0;
  const stack = [];
  const on = new Set();
  const idx = new Map();
  const low = new Map();
  const out = [];
  const visit = (v) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const group = [];
      let w;
      do {
        w = stack.pop();
        on.delete(w);
        group.push(w);
      } while (w !== v);
      const self = (graph.get(v) ?? []).includes(v);
      if (group.length > 1 || self) out.push(shortestCycle(graph, v, new Set(group)));
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const problems = checkLayers(fileURLToPath(new URL('..', import.meta.url)));
  for (const p of problems) console.log(p);
  console.log(problems.length ? `layers: ${problems.length} problem(s)` : 'layers: ok');
  process.exitCode = problems.length ? 1 : 0;
}
