/**
 * Facts the README and the configuration table state, checked against the code that decides
 * them: the console's command and port, every variable the relay reads (with its default) in the
 * configuration table, the Node versions (`engines`, what CI runs), the licence.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ADMIN_PORT } from '../../admin/server.js';
import { RELAY_DEFAULTS } from '../../relay/server.js';

const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');
const README = read('README.md');
const OPERATIONS = read('docs/operations.md');
const table = OPERATIONS.slice(OPERATIONS.indexOf('## Configuration'));

describe('README and configuration facts', () => {
  it("states the console's command and port, and links the configuration table", () => {
    expect(README).toContain('rendezvous admin');
    expect(README).toContain(`http://127.0.0.1:${ADMIN_PORT}/`);
    expect(README).toContain('docs/operations.md#configuration');
    expect(README).toMatch(/rendezvous identities list/);
  });

  it('the configuration table has every variable the relay reads, with its real default', () => {
    const relayMain = read('relay/main.ts');
    // Every name it reads: `env.NAME` and `intFromEnv('NAME', …)`.
    const read_ = new Set(
      [...relayMain.matchAll(/env\.([A-Z][A-Z0-9_]+)|FromEnv\('([A-Z][A-Z0-9_]+)'/g)].map(
        (m) => m[1] ?? m[2],
      ),
    );
    for (const name of read_) expect(table, name).toContain(name);
    const row = (name: string) => table.split('\n').find((l) => l.startsWith(`| \`${name}`)) ?? '';
    expect(row('RELAY_MAX_PARKED')).toContain(`(${RELAY_DEFAULTS.maxParkedPerKey})`);
    expect(row('RELAY_DRAIN_GRACE_MS')).toContain(`(${RELAY_DEFAULTS.drainGraceMs}`);
    expect(row('RELAY_MAX_HANDSHAKES_PER_SOURCE')).toContain(
      `(${RELAY_DEFAULTS.maxHandshakesPerSource}) and in all (${RELAY_DEFAULTS.maxHandshakes})`,
    );
    expect(row('RELAY_CONNECT_CODE_REUSE')).toMatch(/`live-park` \(default\)/);
  });

  it('recommends a current LTS Node, says what CI tests, and matches engines', () => {
    const engines = JSON.parse(read('package.json')).engines.node as string;
    expect(engines).toBe('>=20');
    const setUp = README.slice(README.indexOf('## Set up'), README.indexOf('## Quick start'));
    expect(setUp).toMatch(/Node\.js 22 or 24/);
    expect(setUp).toMatch(/CI runs the tests on Node 20/);
  });

  it('names the licence, which the LICENSE file holds', () => {
    expect(JSON.parse(read('package.json')).license).toBe('MIT');
    expect(README).toMatch(/MIT \(\[LICENSE\]\(LICENSE\)\)/);
  });
});
