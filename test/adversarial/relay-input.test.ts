/**
 * Adversarial: 10,000 bad connections against the relay of `rendezvous dev` (its own process, so
 * its memory is measured from outside), and the handshake admission limits.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import { SOURCE_BIN } from '../support/cli.js';
import { type DevProcess, startDevProcess, storeOf } from '../support/dev-process.js';
import { dial, readAll } from '../support/net.js';
import { SecretLedger } from '../support/secrets.js';

const HANDSHAKE_MS = 300;
const CLUSTER_SECRET = 'adversarial-cluster-secret-0123456789';
let dev: DevProcess;
const ledger = new SecretLedger();
ledger.add(CLUSTER_SECRET);

beforeAll(async () => {
  // From source, as `npm start` runs it: the RSS bound below was set for that process (the test
  // bundle's smaller start leaves V8 room to grow its young generation during the waves).
  dev = await startDevProcess(
    {
      RELAY_HANDSHAKE_MS: String(HANDSHAKE_MS),
      RELAY_MAX_HANDSHAKES_PER_SOURCE: '600',
      RELAY_MAX_HANDSHAKES: '2000',
      RELAY_CLUSTER_SECRET: CLUSTER_SECRET,
    },
    SOURCE_BIN,
  );
});
afterAll(() => dev?.stop());

/** One bad client: sends `payload` (or nothing) and reports how the relay ended it. */
function badClient(
  port: number,
  payload: Buffer | null,
  localAddress = '127.0.0.1',
): Promise<{ text: string; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const s = connect({ host: '127.0.0.1', port, localAddress });
    const chunks: Buffer[] = [];
    const done = () => {
      clearTimeout(t);
      s.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), ms: Date.now() - started });
    };
    const t = setTimeout(done, 10_000);
    s.on('data', (c) => chunks.push(c));
    s.on('end', done);
    s.on('error', done);
    s.on('connect', () => {
      if (payload) s.write(payload);
    });
  });
}

const kinds: Array<[string, () => Buffer | null, RegExp]> = [
  ['oversize line', () => Buffer.alloc(300, 0x52), /^-ERR line too long\n$/],
  [
    'binary garbage',
    () => Buffer.concat([randomBytes(40).map((b) => (b === 10 ? 11 : b)), Buffer.from('\n')]),
    /^-ERR malformed cookie line\n$/,
  ],
  ['NUL and CR', () => Buffer.from('R\x00\x00\r\r\n'), /^-ERR malformed cookie line\n$/],
  ['nothing at all', () => null, /^-ERR handshake timeout\n$/],
];

async function working(): Promise<void> {
  const store = storeOf(dev);
  try {
    const uuid = `adv-alive-${Date.now()}`;
    const id = await provisionIdentity(store, { uuid });
    ledger.add(id.secret);
    const code = currentCode(id);
    ledger.add(code);
    const res = await fetch(`${dev.apiUrl}/?uuid=${uuid}&response=${code}`, { method: 'PUT' });
    const cookie = ((await res.json()) as { result: { cookie: string } }).result.cookie;
    ledger.add(cookie.slice(1));
    const hidden = await dial(dev.relayPort);
    hidden.write(`${cookie}\n`);
    const hiddenSaw = readAll(hidden);
    await new Promise((r) => setTimeout(r, 100));
    const mobile = await dial(dev.relayPort);
    mobile.end(`I${mobileCookieFor(cookie.slice(1))}\nstill serving`);
    const mobileSaw = readAll(mobile);
    // The hidden side answers once it is paired (+OK), as an agent does: writing before that is
    // refused ("data before +OK"), and a loaded machine may take longer than any fixed pause.
    await new Promise<void>((resolve) => {
      let seen = '';
      const onData = (c: Buffer) => {
        seen += c.toString();
        if (seen.startsWith('+OK\n')) {
          hidden.off('data', onData);
          resolve();
        }
      };
      hidden.on('data', onData);
    });
    hidden.end('yes');
    expect((await hiddenSaw).toString()).toBe('+OK\nstill serving');
    expect((await mobileSaw).toString()).toBe('+OK\nyes');
  } finally {
    store.close();
  }
}

describe('relay line input', () => {
  it('10,000 bad connections each end with -ERR (or at the deadline); RSS stays within 32 MiB; others still served', async () => {
    // Warm up (JIT, V8 heap growth) with 2,000 of the same before taking the baseline.
    for (let w = 0; w < 4; w++) {
      await Promise.all(
        Array.from({ length: 500 }, (_, i) =>
          badClient(dev.relayPort, (kinds[i % 4] as (typeof kinds)[number])[1]()),
        ),
      );
    }
    await new Promise((r) => setTimeout(r, 1_000));
    const before = dev.rssBytes();
    const wave = 500;
    const outcomes: Array<{ kind: number; text: string; ms: number }> = [];
    for (let start = 0; start < 10_000; start += wave) {
      const results = await Promise.all(
        Array.from({ length: wave }, (_, j) => {
          const kind = (start + j) % kinds.length;
          return badClient(dev.relayPort, (kinds[kind] as (typeof kinds)[number])[1]()).then((r) => ({
            kind,
            ...r,
          }));
        }),
      );
      outcomes.push(...results);
    }
    expect(outcomes.length).toBe(10_000);
    for (const [i, [name, , expected]] of kinds.entries()) {
      const mine = outcomes.filter((o) => o.kind === i);
      // Each gets its own -ERR, or — when a loaded machine delays its bytes past the deadline —
      // the deadline's; nothing else, and never silence.
      const wrong = mine.filter((o) => !expected.test(o.text) && o.text !== '-ERR handshake timeout\n');
      expect(wrong.slice(0, 3), name).toEqual([]);
      expect(mine.filter((o) => expected.test(o.text)).length, name).toBeGreaterThan(mine.length * 0.9);
      if (name === 'nothing at all') {
        // Closed at the deadline, not before and not much after.
        expect(Math.min(...mine.map((o) => o.ms))).toBeGreaterThanOrEqual(HANDSHAKE_MS - 50);
        expect(Math.max(...mine.map((o) => o.ms))).toBeLessThan(HANDSHAKE_MS + 5_000);
      }
    }
    // Let the last refusals' lingering sockets close and the collector run.
    await new Promise((r) => setTimeout(r, 2_500));
    const after = dev.rssBytes();
    expect(after - before).toBeLessThan(32 * 1024 * 1024);
    await working();
  }, 120_000);
});

describe('handshake admission', () => {
  let limited: DevProcess;
  beforeAll(async () => {
    limited = await startDevProcess({
      RELAY_HANDSHAKE_MS: '3000',
      RELAY_MAX_HANDSHAKES_PER_SOURCE: '5',
      RELAY_MAX_HANDSHAKES: '8',
    });
  });
  afterAll(() => limited?.stop());

  it('refuses the excess at once, per source address and in total, and admits again later', async () => {
    const open = (addr: string) =>
      new Promise<Socket>((resolve) => {
        const s = connect({ host: '127.0.0.1', port: limited.relayPort, localAddress: addr }, () =>
          resolve(s),
        );
      });
    const silent = await Promise.all(Array.from({ length: 5 }, () => open('127.0.0.2')));
    await new Promise((r) => setTimeout(r, 100));
    const perSource = await badClient(limited.relayPort, null, '127.0.0.2');
    expect(perSource.text).toBe('-ERR too many connections in handshake from your address\n');
    expect(perSource.ms).toBeLessThan(500);
    silent.push(...(await Promise.all(Array.from({ length: 3 }, () => open('127.0.0.3')))));
    await new Promise((r) => setTimeout(r, 100));
    const total = await badClient(limited.relayPort, null, '127.0.0.4');
    expect(total.text).toBe('-ERR too many connections in handshake, try again\n');
    expect(total.ms).toBeLessThan(500);
    const httpTotal = await badClient(limited.httpPort, Buffer.from('GET / HTTP/1.1\r\n\r\n'), '127.0.0.5');
    expect(httpTotal.text).toMatch(/^HTTP\/1\.1 503 .*Retry-After: 1/s);
    for (const s of silent) s.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const again = await badClient(limited.relayPort, Buffer.from('Rnope\n'), '127.0.0.2');
    expect(again.text).toBe('-ERR unknown cookie\n');
  });
});

describe('worst-case request heads (issue 12 item 4)', () => {
  /** Ten heads of about 16 KiB sent at once to the HTTP port, then a probe on the generic port. */
  const probeDuring = async (head: string): Promise<number> => {
    const heads = Array.from({ length: 10 }, () => badClient(dev.httpPort, Buffer.from(head, 'latin1')));
    // Let the heads arrive, so the probe lands while the relay parses them.
    await new Promise((r) => setTimeout(r, 30));
    const probe = await badClient(dev.relayPort, Buffer.from('Rnope\n'));
    expect(probe.text).toBe('-ERR unknown cookie\n');
    for (const h of await Promise.all(heads)) expect(h.text).toMatch(/^HTTP\/1\.1 401 /);
    return probe.ms;
  };
  const size = 16 * 1024 - 200;

  it('do not stall the relay: a probe answers about as fast as next to normal heads', async () => {
    const normal = `GET / HTTP/1.1\r\nHost: r\r\nX-A: ${'a'.repeat(size)}\r\n\r\n`;
    const worst = `GET / HTTP/1.1\r\nHost: r\r\nX-A: a${' '.repeat(size)}b\r\n\r\n`;
    const bases: number[] = [];
    const bads: number[] = [];
    for (let k = 0; k < 3; k++) {
      bases.push(await probeDuring(normal));
      bads.push(await probeDuring(worst));
    }
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[1] as number;
    const base = median(bases);
    const bad = median(bads);
    // A floor of 100 ms keeps scheduling noise on a busy machine from making a ratio of two tiny numbers.
    expect(bad / Math.max(base, 100)).toBeLessThan(10);
  });
});

describe('logs', () => {
  it('contain no TOTP secret, code, cookie or cluster secret', () => {
    const out = dev.output();
    expect(out).toContain('relay listening');
    expect(ledger.leakedIn(out)).toEqual([]);
  });
});
