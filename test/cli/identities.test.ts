/**
 * `rendezvous identities …`: the console's identity actions from the command line, as real CLI
 * processes against a table in dynalite, configured the way `provision` is (AWS_ENDPOINT_URL_DYNAMODB,
 * RENDEZVOUS_TABLE, AWS_REGION) — a deployed table is reached by the same code with other values.
 * Scriptable with --json; a rotation prints the new secret once; deletion asks (or takes --yes)
 * and refuses without a terminal to ask on.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IdentityRow } from '../../admin/rows.js';
import { provisionIdentity } from '../../server/identities.js';
import { BIN, runCli } from '../support/cli.js';
import { embeddedStore } from '../support/store.js';

let store: Awaited<ReturnType<typeof embeddedStore>>;
let env: Record<string, string>;

beforeAll(async () => {
  store = await embeddedStore('rendezvous-identities-cli');
  env = {
    AWS_ENDPOINT_URL_DYNAMODB: store.endpoint,
    RENDEZVOUS_TABLE: store.store.table,
    AWS_REGION: 'local',
  };
}, 60_000);

afterAll(async () => {
  await store?.close();
});

const ids = (args: string[], input?: string) => runCli(['identities', ...args], env, input ?? '');
const json = <T>(r: { stdout: Buffer }) => JSON.parse(r.stdout.toString()) as T;

describe('rendezvous identities', () => {
  it('list: every identity with its label and state, as text and as --json, never a secret', async () => {
    const a = await provisionIdentity(store.store, { uuid: 'ids-list-a', label: "Ann's laptop" });
    const b = await provisionIdentity(store.store, { uuid: 'ids-list-b' });
    await store.store.setDisabled('ids-list-b', true);
    const [text, asJson] = await Promise.all([ids(['list']), ids(['list', '--json'])]);
    expect(text.code, text.stderr).toBe(0);
    const lines = text.stdout.toString().trimEnd().split('\n');
    expect(lines[0]).toMatch(/^UUID\s+LABEL\s+STATE/);
    expect(lines.find((l) => l.startsWith('ids-list-a'))).toMatch(/Ann's laptop\s+offline/);
    expect(lines.find((l) => l.startsWith('ids-list-b'))).toMatch(/disabled/);
    expect(asJson.code, asJson.stderr).toBe(0);
    const rows = json<IdentityRow[]>(asJson);
    expect(rows.find((r) => r.uuid === 'ids-list-a')).toMatchObject({
      label: "Ann's laptop",
      disabled: false,
    });
    expect(rows.find((r) => r.uuid === 'ids-list-b')).toMatchObject({ disabled: true });
    for (const out of [text.stdout.toString(), asJson.stdout.toString()])
      for (const secret of [a.secret, b.secret]) expect(out).not.toContain(secret);
  }, 180_000);

  it('show: one identity (text and --json); an unknown uuid is one line and exit 1', async () => {
    await provisionIdentity(store.store, { uuid: 'ids-show', label: 'shown' });
    const [text, asJson, unknown] = await Promise.all([
      ids(['show', 'ids-show']),
      ids(['show', 'ids-show', '--json']),
      ids(['show', 'ids-nobody']),
    ]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout.toString()).toMatch(/^uuid\s+ids-show$/m);
    expect(text.stdout.toString()).toMatch(/^label\s+shown$/m);
    expect(json<IdentityRow>(asJson)).toMatchObject({ uuid: 'ids-show', label: 'shown', disabled: false });
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('rendezvous: no such identity: ids-nobody\n');
  }, 180_000);

  it('rotate: the new secret printed once (text and --json); the store holds it, the old one is gone', async () => {
    const old = await provisionIdentity(store.store, { uuid: 'ids-rotate' });
    const r = await ids(['rotate', 'ids-rotate', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const rotated = json<{ uuid: string; secret: string; digits: number; step: number; otpauth: string }>(r);
    expect(rotated).toMatchObject({ uuid: 'ids-rotate', digits: 6, step: 30 });
    expect(rotated.secret).toMatch(/^[A-Z2-7]{32}$/);
    expect(rotated.secret).not.toBe(old.secret);
    expect((await store.store.getIdentity('ids-rotate'))?.secret).toBe(rotated.secret);
    const text = await ids(['rotate', 'ids-rotate']);
    expect(text.code, text.stderr).toBe(0);
    const out = text.stdout.toString();
    const secret = /^secret\s+([A-Z2-7]+)$/m.exec(out)?.[1] as string;
    expect((await store.store.getIdentity('ids-rotate'))?.secret).toBe(secret);
    expect(out).toMatch(/shown once/);
    expect(out).toContain('rendezvous expose --uuid ids-rotate');
    expect(out).not.toMatch(/npx/);
    // Once: nothing else ever prints it.
    const later = await Promise.all(
      [['list'], ['show', 'ids-rotate'], ['show', 'ids-rotate', '--json']].map((args) => ids(args)),
    );
    for (const r of later) expect(r.stdout.toString()).not.toContain(secret);
  }, 180_000);

  it('disable and enable: the store follows, --json says the state', async () => {
    await provisionIdentity(store.store, { uuid: 'ids-toggle' });
    const off = await ids(['disable', 'ids-toggle']);
    expect(off.code, off.stderr).toBe(0);
    expect(off.stdout.toString()).toBe('ids-toggle disabled\n');
    expect((await store.store.getIdentity('ids-toggle'))?.disabled).toBe(true);
    const on = await ids(['enable', 'ids-toggle', '--json']);
    expect(on.code, on.stderr).toBe(0);
    expect(json(on)).toEqual({ uuid: 'ids-toggle', disabled: false });
    expect((await store.store.getIdentity('ids-toggle'))?.disabled).toBe(false);
    const unknown = await ids(['disable', 'ids-nobody']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('rendezvous: no such identity: ids-nobody\n');
  }, 180_000);

  it('unlock: clears the uuid’s wrong-code counter; show says locked before, not after', async () => {
    await provisionIdentity(store.store, { uuid: 'ids-locked' });
    const now = Math.floor(Date.now() / 1000);
    for (let i = 0; i < 10; i++) await store.store.reserveAttempt('uuid', 'ids-locked', 10, now, 300);
    expect(json<IdentityRow>(await ids(['show', 'ids-locked', '--json'])).lockout).toMatchObject({
      locked: true,
      failures: 10,
    });
    const r = await ids(['unlock', 'ids-locked', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r)).toEqual({ uuid: 'ids-locked', unlocked: true });
    expect(await store.store.getAttempts('uuid', 'ids-locked')).toBeUndefined();
    expect(json<IdentityRow>(await ids(['show', 'ids-locked', '--json'])).lockout.locked).toBe(false);
  }, 180_000);

  it('delete: refuses without a terminal unless --yes (exit 2); --yes deletes', async () => {
    await provisionIdentity(store.store, { uuid: 'ids-delete' });
    const refused = await ids(['delete', 'ids-delete']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^rendezvous: identities delete: .*--yes/);
    expect(refused.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(await store.store.getIdentity('ids-delete')).toBeDefined();
    const done = await ids(['delete', 'ids-delete', '--yes', '--json']);
    expect(done.code, done.stderr).toBe(0);
    expect(json(done)).toEqual({ uuid: 'ids-delete', deleted: true });
    expect(await store.store.getIdentity('ids-delete')).toBeUndefined();
    const again = await ids(['delete', 'ids-delete', '--yes']);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe('rendezvous: no such identity: ids-delete\n');
  }, 180_000);

  it('delete on a terminal asks: "n" keeps the identity, "y" deletes it', async () => {
    await provisionIdentity(store.store, { uuid: 'ids-ask' });
    // script(1) gives the command a terminal; the answer is typed once the question shows.
    const onTty = (answer: string) =>
      new Promise<{ code: number | null; out: string }>((resolve, reject) => {
        const child = spawn(
          'script',
          ['-qec', `"${process.execPath}" "${BIN}" identities delete ids-ask`, '/dev/null'],
          { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] },
        );
        let out = '';
        let typed = false;
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          if (!typed && /\[y\/N\]/.test(out)) {
            typed = true;
            child.stdin.write(`${answer}\n`);
          }
        });
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`no answer within 90 s: ${out}`));
        }, 90_000);
        child.on('close', (code) => {
          clearTimeout(t);
          resolve({ code, out });
        });
      });
    const kept = await onTty('n');
    expect(kept.out).toMatch(/Delete identity ids-ask\?.*\[y\/N\]/s);
    expect(kept.out).toMatch(/not deleted/);
    expect(await store.store.getIdentity('ids-ask')).toBeDefined();
    const gone = await onTty('y');
    expect(gone.code, gone.out).toBe(0);
    expect(gone.out).toMatch(/ids-ask deleted/);
    expect(await store.store.getIdentity('ids-ask')).toBeUndefined();
  }, 180_000);

  it('usage: a malformed uuid or a missing one is exit 2 in one line', async () => {
    const [bad, missing] = await Promise.all([ids(['rotate', 'bad uuid']), ids(['disable'])]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/identities rotate: .*letters, digits/);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/missing required argument 'uuid'/);
    for (const r of [bad, missing]) expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  }, 180_000);
});
