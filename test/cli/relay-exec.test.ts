/**
 * `rendezvous relay` runs the production bundle and rebuilds it first when a source it is built
 * from is newer: relay/, core/ and server/ (the store and authentication moved there), at any depth.
 */
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { bundleStale } from '../../cli/relay-exec.js';

const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
});

/** A checkout with the bundle built at t=1000 s and each source file at its own time. */
function checkout(sources: Record<string, number>): string {
  const root = mkdtempSync(join(tmpdir(), 'relay-exec-'));
  roots.push(root);
  const files = { 'dist/relay.mjs': 1_000, ...sources };
  for (const [path, seconds] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), '');
    utimesSync(join(root, path), seconds, seconds);
  }
  return root;
}

describe('the relay bundle is stale', () => {
  it.each([
    ['relay/server.ts', true],
    ['core/splice.ts', true],
    ['server/connect-auth.ts', true],
    ['server/store/parks.ts', true],
    ['client/hidden-server.ts', false],
  ])('when %s changed after the build: %s', (path, stale) => {
    const root = checkout({ 'relay/main.ts': 900, [path]: 1_100 });
    expect(bundleStale(join(root, 'dist/relay.mjs'), root)).toBe(stale);
  });

  it('not when every source is older, and always when it is missing', () => {
    const root = checkout({ 'relay/main.ts': 900, 'server/store/table.ts': 900, 'core/log.ts': 900 });
    expect(bundleStale(join(root, 'dist/relay.mjs'), root)).toBe(false);
    expect(bundleStale(join(root, 'dist/none.mjs'), root)).toBe(true);
  });
});
