/**
 * The layers hold on this checkout (scripts/layers.mjs), and the check really catches each kind of
 * violation: a deliberate one in a scratch tree fails it.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
// @ts-expect-error: a plain ES module script without declarations
import { checkLayers, MAX_LINES } from '../../scripts/layers.mjs';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const scratch: string[] = [];
afterEach(() => {
  for (const dir of scratch.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'layers-'));
  scratch.push(root);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

describe('layers', () => {
  it('hold on this checkout: one-way arrows, the SDK in the store only, no cycles, no long files', () => {
    expect(checkLayers(repo)).toEqual([]);
  });

  it('a clean scratch tree passes (the check is not failing for everything)', () => {
    const root = tree({
      'core/a.ts': "import { x } from './b.js';\nexport const y = x;\n",
      'core/b.ts': 'export const x = 1;\n',
      'server/store/table.ts':
        "import { DynamoDBClient } from '@aws-sdk/client-dynamodb';\nimport { x } from '../../core/b.js';\n",
      'client/c.ts': "import { x } from '../core/b.js';\n",
      'infra/stack.ts': "import { METRICS } from '../server/metrics/catalogue.js';\n",
      'server/metrics/catalogue.ts': 'export const METRICS = [];\n',
    });
    expect(checkLayers(root)).toEqual([]);
  });

  it.each([
    [
      'core importing the service',
      { 'core/a.ts': "import { Store } from '../server/store/store.js';\n", 'server/store/store.ts': '' },
      'core/ may not import server/store/store.ts',
    ],
    [
      'the client importing the relay',
      { 'client/a.ts': "import type { X } from '../relay/x.js';\n", 'relay/x.ts': '' },
      'client/ may not import relay/x.ts',
    ],
    [
      'the server importing the client',
      { 'server/a.ts': "export { y } from '../client/y.js';\n", 'client/y.ts': '' },
      'server/ may not import client/y.ts',
    ],
    [
      'the SDK outside the store',
      { 'relay/a.ts': "import { GetCommand } from '@aws-sdk/lib-dynamodb';\n" },
      'relay/a.ts: imports @aws-sdk/lib-dynamodb',
    ],
    [
      'infra importing runtime code',
      { 'infra/a.ts': "import { startRelay } from '../relay/server.js';\n", 'relay/server.ts': '' },
      'infra imports runtime code relay/server.ts',
    ],
    [
      'a cycle',
      { 'relay/a.ts': "import { b } from './b.js';\n", 'relay/b.ts': "import { a } from './a.js';\n" },
      'import cycle: relay/a.ts → relay/b.ts → relay/a.ts',
    ],
    [
      'a long file',
      { 'relay/long.ts': 'export const x = 1;\n'.repeat(MAX_LINES + 1) },
      `relay/long.ts: ${MAX_LINES + 1} lines`,
    ],
  ])('fail on %s', (_name, files, expected) => {
    const problems: string[] = checkLayers(tree(files as Record<string, string>));
    expect(
      problems.some((p) => p.includes(expected)),
      problems.join('\n'),
    ).toBe(true);
  });
});
