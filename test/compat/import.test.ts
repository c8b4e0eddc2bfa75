/**
 * `rendezvous import` and `provision`'s existing-secret options, run as the real command against
 * dynalite: every accepted dump shape, idempotent re-import, conflicts and `--force`, unreadable
 * records, and no secret ever in the output. The console lists imported identities.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type AdminConsole, startAdminConsole } from '../../admin/server.js';
import { importEntries, splitDump } from '../../cli/import/import.js';
import { registerHiddenServer } from '../../server/register.js';
import { runCli } from '../support/cli.js';
import { embeddedStore } from '../support/store.js';
import {
  base32Bytes,
  binarySecret,
  originalAsciiSecret,
  originalCode,
  originalRecord,
  stepAt,
} from './original-model.js';

// Each test runs the real command several times: room for a loaded 2-core machine.
vi.setConfig({ testTimeout: 120_000 });

let env: Awaited<ReturnType<typeof embeddedStore>>;
let admin: AdminConsole;
const secrets: string[] = [];

beforeAll(async () => {
  env = await embeddedStore();
  admin = await startAdminConsole({ store: env.store, port: 0 });
});
afterAll(async () => {
  await admin?.close();
  await env?.close();
});

const cliEnv = () => ({
  AWS_ENDPOINT_URL_DYNAMODB: env.endpoint,
  AWS_REGION: 'local',
  RENDEZVOUS_TABLE: env.store.table,
});

function secret(kind: 'ascii' | 'binary' = 'ascii'): string {
  const s = kind === 'ascii' ? originalAsciiSecret() : binarySecret();
  secrets.push(s);
  return s;
}

/** Fails if any secret handled by this file appears in `text`. */
function noSecretIn(text: string) {
  for (const s of secrets) expect(text).not.toContain(s);
}

async function importText(text: string, ...args: string[]) {
  const out = await runCli(['import', ...args], cliEnv(), text);
  const stdout = out.stdout.toString();
  noSecretIn(stdout + out.stderr);
  return { code: out.code, stdout, stderr: out.stderr };
}

describe('accepted dump shapes', () => {
  it('object of uuid → record string (redis values), object of uuid → record object', async () => {
    const a = secret();
    const b = secret();
    const r = await importText(
      JSON.stringify({
        'shape-a': originalRecord('shape-a', a),
        'shape-b': JSON.parse(originalRecord('shape-b', b)),
      }),
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^imported 2, unchanged 0/);
    const id = await env.store.getIdentity('shape-a');
    expect(id?.secret).toBe(a);
    expect(id?.compat).toMatchObject({
      digits: 'original',
      encoding: 'rfc6238',
      window: 0,
      reuseWithinStep: true,
      cookieLifetime: 'next-registration',
    });
    expect(id?.compat?.importedFrom).toContain('node-rendezvous');
  });

  it('an array of records, and one record alone', async () => {
    const r1 = await importText(
      JSON.stringify([originalRecord('shape-c', secret()), JSON.parse(originalRecord('shape-d', secret()))]),
    );
    expect(r1.stdout).toMatch(/^imported 2,/);
    const r2 = await importText(originalRecord('shape-e', secret()));
    expect(r2.stdout).toMatch(/^imported 1,/);
  });

  it('redis-cli --raw lines (key, then value) and bare JSON lines, read from a file argument too', async () => {
    const lines = [
      'shape-f',
      originalRecord('shape-f', secret()),
      '',
      'shape-g',
      originalRecord('shape-g', secret()),
      originalRecord('shape-h', secret()),
    ].join('\n');
    expect(splitDump(lines).map((x) => x.key)).toEqual(['shape-f', 'shape-g', undefined]);
    const { writeFile, mkdtemp, rm } = await import('node:fs/promises');
    const dir = await mkdtemp('/tmp/rv-import-');
    await writeFile(`${dir}/dump.txt`, lines, { mode: 0o600 });
    const out = await runCli(['import', `${dir}/dump.txt`], cliEnv());
    expect(out.stdout.toString()).toMatch(/^imported 3,/);
    await rm(dir, { recursive: true });
  });

  it('a binary secret is imported with speakeasy-style codes; a record`s length 8 still takes every length (the original never read it)', async () => {
    await importText(JSON.stringify({ 'shape-bin': originalRecord('shape-bin', secret('binary'), 8) }));
    const id = await env.store.getIdentity('shape-bin');
    expect(id?.compat).toMatchObject({ encoding: 'speakeasy', digits: 'original' });
  });
});

describe('usage limits (issue 30)', () => {
  it('an imported identity has no limits, even from a record that names some', async () => {
    const record = {
      ...JSON.parse(originalRecord('limits-import', secret())),
      limits: { monthlyBytes: 1, bytesPerSecond: 1024, maxConcurrent: 1 },
    };
    const report = await importEntries(env.store, splitDump(JSON.stringify([record])));
    expect(report.imported).toEqual(['limits-import']);
    const id = await env.store.getIdentity('limits-import');
    expect(id?.compat).toBeDefined();
    expect(id && 'limits' in id).toBe(false);
  });

  it('a forced re-import replaces the secret and keeps the limits the operator set since', async () => {
    await importEntries(env.store, splitDump(originalRecord('limits-reimport', secret())));
    await env.store.setLimits('limits-reimport', { maxConcurrent: 2 });
    const report = await importEntries(env.store, splitDump(originalRecord('limits-reimport', secret())), {
      force: true,
    });
    expect(report.replaced).toEqual(['limits-reimport']);
    expect((await env.store.getIdentity('limits-reimport'))?.limits).toEqual({ maxConcurrent: 2 });
  });
});

describe('idempotence, conflicts and bad records', () => {
  it('re-import skips what is there; a different secret is a conflict, left alone unless --force', async () => {
    const first = secret();
    const dump = JSON.stringify({ 'idem-1': originalRecord('idem-1', first) });
    expect((await importText(dump)).stdout).toMatch(/^imported 1, unchanged 0/);
    const again = await importText(dump);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^imported 0, unchanged 1/);

    // Registered meanwhile with the original's code.
    const step = stepAt(Date.now());
    await registerHiddenServer(
      env.store,
      { relayHost: '127.0.0.1', relayPort: 1 },
      'idem-1',
      originalCode(first, step),
      Date.now(),
      '10.1.1.1',
    );
    const other = secret();
    const clash = JSON.stringify({ 'idem-1': originalRecord('idem-1', other) });
    const conflict = await importText(clash);
    expect(conflict.code).toBe(1);
    expect(conflict.stdout).toMatch(/conflicts 1/);
    expect(conflict.stdout).toContain('conflict   idem-1');
    expect((await env.store.getIdentity('idem-1'))?.secret).toBe(first);
    expect(await env.store.getRegistration('idem-1')).toBeDefined();

    const forced = await importText(clash, '--force');
    expect(forced.code).toBe(0);
    expect(forced.stdout).toContain('replaced   idem-1');
    expect((await env.store.getIdentity('idem-1'))?.secret).toBe(other);
    // Replacing the secret ends what the old one registered, as a rotation does.
    expect(await env.store.getRegistration('idem-1')).toBeUndefined();
  });

  it('unreadable records are listed with a reason (never their secret); the rest are imported', async () => {
    const good = secret();
    const short = 'GEZDGNBV'; // 5 bytes
    const dump = JSON.stringify({
      'bad-key': originalRecord('other-uuid', secret()),
      'bad-short': originalRecord('bad-short', short),
      'bad-json': '{"uuid": "bad-json", ',
      'bad-len': originalRecord('bad-len', secret(), 4),
      'bad uuid': originalRecord('bad uuid', secret()),
      'good-one': originalRecord('good-one', good),
    });
    const r = await importText(dump);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^imported 1, .*skipped 5/);
    expect(r.stdout).toContain(
      'skipped    bad-key: not usable here (the key and the record name different uuids)',
    );
    expect(r.stdout).toContain('skipped    bad-short: not usable here (the secret is shorter than 10 bytes');
    expect(r.stdout).toContain('skipped    bad-json: not JSON');
    expect(r.stdout).toContain('skipped    bad-len: not usable here (length below 6');
    expect(r.stdout).toContain('skipped    bad uuid: not usable here (uuid: 1–128');
    expect(await env.store.getIdentity('good-one')).toBeDefined();
    expect(r.stdout).not.toContain(short);
  });

  it('garbage on stdin is refused with a clear message, exit 1', async () => {
    const r = await importText('this is not a dump');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/skipped 1/);
  });
});

describe('provision with an existing or original-style secret', () => {
  it('--secret-stdin and --secret-env take the secret, never print it, and it registers', async () => {
    const s = secret();
    const viaStdin = await runCli(
      ['provision', '--uuid', 'prov-stdin', '--secret-stdin', '--compat'],
      cliEnv(),
      `${s}\n`,
    );
    expect(viaStdin.code).toBe(0);
    noSecretIn(viaStdin.stdout.toString() + viaStdin.stderr);
    expect((await env.store.getIdentity('prov-stdin'))?.secret).toBe(s);
    const triple = await registerHiddenServer(
      env.store,
      { relayHost: '127.0.0.1', relayPort: 1 },
      'prov-stdin',
      originalCode(s, stepAt(Date.now())),
      Date.now(),
      '10.1.1.2',
    );
    expect(triple.cookie).toMatch(/^R/);

    const t = secret();
    const viaEnv = await runCli(['provision', '--uuid', 'prov-env', '--secret-env'], {
      ...cliEnv(),
      RENDEZVOUS_SECRET: `otpauth://totp/x?secret=${t}&issuer=x`,
    });
    expect(viaEnv.code).toBe(0);
    noSecretIn(viaEnv.stdout.toString() + viaEnv.stderr);
    const strict = await env.store.getIdentity('prov-env');
    expect(strict?.secret).toBe(t);
    expect(strict?.compat).toBeUndefined();
    expect(strict?.digits).toBe(6);
  });

  it('a malformed secret is refused without echoing it', async () => {
    const r = await runCli(
      ['provision', '--uuid', 'prov-bad', '--secret-stdin'],
      cliEnv(),
      'not!base32!secret-value\n',
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('the secret is not base32');
    expect(r.stderr).not.toContain('not!base32!secret-value');
  });

  it('provision --compat mints a 40-character ASCII secret and prints the original`s record', async () => {
    const r = await runCli(['provision', '--uuid', 'prov-compat', '--compat', '--json'], cliEnv());
    expect(r.code).toBe(0);
    const record = JSON.parse(r.stdout.toString());
    expect(record.authParams).toMatchObject({ length: 40, step: 30, protocol: 'totp', algorithm: 'sha1' });
    expect(base32Bytes(record.authParams.base32).toString('latin1')).toMatch(/^[\x21-\x7e]{40}$/);
    expect(record.authURL).toContain(`secret=${record.authParams.base32}`);
    const id = await env.store.getIdentity('prov-compat');
    expect(id?.compat?.digits).toBe('original');
    expect(id?.secret).toBe(record.authParams.base32);
  });
});

describe('rendezvous compat: per-identity settings', () => {
  it('gives a strict identity the original`s 8-digit speakeasy codes, then makes it strict again', async () => {
    const bin = secret('binary');
    const made = await runCli(['provision', '--uuid', 'set-compat', '--secret-stdin'], cliEnv(), bin);
    expect(made.code).toBe(0);
    const reg = (code: string, at: number) =>
      registerHiddenServer(
        env.store,
        { relayHost: '127.0.0.1', relayPort: 1 },
        'set-compat',
        code,
        at,
        '10.1.1.3',
      );
    const step = stepAt(Date.now()) + 100;
    const at = step * 30_000 + 1_000;
    // Strict: the original's 8-digit code of a binary secret is refused.
    await expect(reg(originalCode(bin, step, 8), at)).rejects.toMatchObject({ code: 'AUTH_FAILED' });

    const set = await runCli(
      [
        'compat',
        'set-compat',
        '--digits',
        '8',
        '--encoding',
        'speakeasy',
        '--reuse-within-step',
        'no',
        '--cookie-lifetime',
        '3600',
      ],
      cliEnv(),
    );
    expect(set.code).toBe(0);
    expect(set.stdout.toString()).toContain('"digits":8');
    await reg(originalCode(bin, step, 8), at);
    const lifetime = await env.store.getRegistrationRecord('set-compat');
    expect(lifetime?.expiresAt).toBe(Math.floor(at / 1000) + 3600);
    // Reuse within the step was turned off: the same code again is refused.
    await expect(reg(originalCode(bin, step, 8), at)).rejects.toMatchObject({ code: 'AUTH_FAILED' });

    const strict = await runCli(['compat', 'set-compat', '--strict'], cliEnv());
    expect(strict.stdout.toString()).toContain('set-compat  strict');
    const { rfcCode } = await import('./original-model.js');
    await reg(rfcCode(bin, step + 1), at + 30_000);
    expect((await env.store.getIdentity('set-compat'))?.compat).toBeUndefined();
  });

  it('one setting named on a strict identity changes that setting alone', async () => {
    await runCli(['provision', '--uuid', 'one-setting'], cliEnv());
    const r = await runCli(['compat', 'one-setting', '--window', '0'], cliEnv());
    expect(r.code).toBe(0);
    const compat = (await env.store.getIdentity('one-setting'))?.compat;
    expect(compat).toMatchObject({ digits: 6, encoding: 'rfc6238', window: 0, reuseWithinStep: false });
    expect(compat?.cookieLifetime).toBe(24 * 60 * 60);
  });

  it('bad values are refused with the field named', async () => {
    const r = await runCli(['compat', 'shape-a', '--digits', '4'], cliEnv());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('digits: original or 6–10');
    const w = await runCli(['compat', 'shape-a', '--window', '3'], cliEnv());
    expect(w.stderr).toContain('window: 0 or 1');
    const none = await runCli(['compat', 'nobody-here', '--window', '0'], cliEnv());
    expect(none.stderr).toContain('no identity nobody-here');
  });
});

describe('operator console', () => {
  it('lists imported identities like any other, with their compatibility settings; strict ones say strict', async () => {
    const res = await fetch(`${admin.url}/`);
    const html = await res.text();
    const row = (uuid: string) => {
      const start = html.indexOf(`data-uuid="${uuid}"`);
      return html.slice(start, html.indexOf('</tr>', start));
    };
    expect(row('shape-a')).toContain('imported: node-rendezvous (https://registrar.example.com)');
    expect(row('shape-a')).toContain('codes: last 6–10 digits or the whole value, unpadded');
    expect(row('shape-a')).toContain('no ±1 window');
    expect(row('shape-a')).toContain('code reusable within its step');
    expect(row('shape-a')).toContain('cookie until the next registration');
    expect(row('shape-bin')).toContain('speakeasy key');
    expect(row('prov-env')).toContain('strict');
    noSecretIn(html);
  });
});

describe('a hostile dump cannot write to the operator`s terminal (issue 26 item 9)', () => {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: raw control characters are what must not appear
  const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e]/;
  it('control characters in keys, reasons and error messages are escaped, never printed raw', async () => {
    const forged = 'hostile-a\n  imported   root-account\r\u001b[2K';
    const dump = JSON.stringify({
      [forged]: 'not json at all',
      'hostile-b\u001b]0;pwned\u0007': '{"uuid":"x"}',
      'hostile-c\u009b31m': '[]',
      'hostile-d\u202e': 'x',
    });
    const r = await importText(dump);
    const all = r.stdout + r.stderr;
    // No control character at all but the line ends.
    expect(all).not.toMatch(RAW_CONTROL);
    expect(r.stdout).not.toMatch(/^ {2}imported {3}root-account/m);
    expect(r.stdout).toContain('  skipped    hostile-a\\n  imported   root-account\\r\\e[2K: not JSON\n');
    expect(r.stdout).toContain('hostile-b\\e]0;pwned\\x07');
    expect(r.stdout).toContain('hostile-c\\x9b31m');
    expect(r.stdout).toContain('hostile-d\\u{202e}');
    const json = await importText(dump, '--json');
    expect(json.stdout).not.toMatch(RAW_CONTROL);
    const parsed = JSON.parse(json.stdout) as { skipped: Array<{ key: string }> };
    expect(parsed.skipped.map((s) => s.key)).toContain('hostile-c\u009b31m');
  }, 120_000);

  it('error messages that quote an argument escape it', async () => {
    const r = await runCli(['compat', 'nobody\u001b[2J\rhere', '--window', '0'], cliEnv());
    expect(r.code).toBe(1);
    expect(r.stderr).not.toMatch(RAW_CONTROL);
    expect(r.stderr).toContain('nobody\\e[2J\\rhere');
    const f = await runCli(['import', '/tmp/no-such-\u001b[31m-file'], cliEnv());
    expect(f.code).toBe(1);
    expect(f.stderr).toBe('rendezvous: cannot read /tmp/no-such-\\e[31m-file: ENOENT\n');
  }, 120_000);
});
