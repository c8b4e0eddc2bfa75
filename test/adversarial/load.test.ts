/**
 * Adversarial load on `rendezvous dev` in its own process: a stalled receiver must not grow the
 * relay's memory or freeze another splice, and 1,000 concurrent splices must all arrive intact
 * and give back every file descriptor.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import { type DevProcess, startDevProcess, storeOf } from '../support/dev-process.js';
import { dial, readAll, sha256 } from '../support/net.js';
import { SecretLedger } from '../support/secrets.js';

let dev: DevProcess;
let store: ReturnType<typeof storeOf>;
const ledger = new SecretLedger();

beforeAll(async () => {
  // Every client comes from 127.0.0.1 and each of the 10 hidden servers gets 100 splices at once:
  // lift the per-source and per-hidden-server limits this test is not about.
  dev = await startDevProcess({
    RELAY_MAX_PARKED: '128',
    RELAY_MAX_HANDSHAKES_PER_SOURCE: '4000',
    RELAY_MAX_WAITING_PER_SOURCE: '4000',
    RELAY_MAX_SPLICES_PER_UUID: '1000',
    RELAY_MAX_SPLICES_PER_SOURCE: '1000',
  });
  store = storeOf(dev);
});
afterAll(async () => {
  store?.close();
  await dev?.stop();
});

/** Provisions and registers `uuid`; returns the cookie body. */
async function register(uuid: string): Promise<string> {
  const id = await provisionIdentity(store, { uuid });
  const code = currentCode(id);
  ledger.add(id.secret, code);
  const res = await fetch(`${dev.apiUrl}/?uuid=${uuid}&response=${code}`, { method: 'PUT' });
  const cookie = ((await res.json()) as { result: { cookie: string } }).result.cookie.slice(1);
  ledger.add(cookie);
  return cookie;
}

/** Parks one raw hidden socket; resolves once the relay holds it. */
async function park(cookie: string): Promise<Socket> {
  const s = await dial(dev.relayPort);
  s.write(`R${cookie}\n`);
  return s;
}

/** Waits for the first bytes on `s` (the +OK). */
function firstBytes(s: Socket): Promise<Buffer> {
  return new Promise((resolve) => s.once('data', resolve));
}

describe('backpressure', () => {
  it('a stalled mobile client: relay memory grows < 64 MiB and another splice keeps moving', async () => {
    const stalledCookie = await register('adv-stalled');
    const otherCookie = await register('adv-flowing');
    const hidden = await park(stalledCookie);
    const otherHidden = await park(otherCookie);
    await new Promise((r) => setTimeout(r, 200));
    const mobile = await dial(dev.relayPort);
    mobile.write(`I${mobileCookieFor(stalledCookie)}\n`);
    await firstBytes(hidden);
    // The mobile client reads its +OK and then nothing more.
    await firstBytes(mobile);
    mobile.pause();
    const before = dev.rssBytes();
    // The hidden server tries to send 200 MiB as fast as the relay lets it, for at most 8 s.
    const chunk = randomBytes(1 << 20);
    let offered = 0;
    const deadline = Date.now() + 8_000;
    const pushing = (async () => {
      while (offered < 200 * (1 << 20) && Date.now() < deadline) {
        offered += chunk.length;
        if (!hidden.write(chunk)) {
          await Promise.race([
            new Promise((r) => hidden.once('drain', r)),
            new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now()))),
          ]);
        }
      }
    })();
    // Meanwhile another rendezvous moves 16 MiB each way.
    const otherMobile = await dial(dev.relayPort);
    otherMobile.write(`I${mobileCookieFor(otherCookie)}\n`);
    await firstBytes(otherHidden);
    const fromMobile = randomBytes(16 << 20);
    const fromHidden = randomBytes(16 << 20);
    const hiddenGot = readAll(otherHidden);
    const mobileGot = readAll(otherMobile);
    otherMobile.end(fromMobile);
    otherHidden.end(fromHidden);
    const [h, m] = await Promise.all([hiddenGot, mobileGot]);
    expect(sha256(h)).toBe(sha256(fromMobile));
    expect(sha256(m.subarray(4))).toBe(sha256(fromHidden));
    await pushing;
    const grown = dev.rssBytes() - before;
    expect(grown).toBeLessThan(64 * 1024 * 1024);
    // The stall held: the relay stopped reading, so only socket buffers' worth left the sender.
    expect(hidden.bytesWritten).toBeLessThan(64 * 1024 * 1024);
    if (process.env.DEBUG_LOAD)
      console.log({ grownMiB: grown / 2 ** 20, acceptedMiB: hidden.bytesWritten / 2 ** 20 });
    hidden.destroy();
    mobile.destroy();
  }, 60_000);
});

describe('integrity under load', () => {
  it('1,000 concurrent splices with random payloads both ways arrive sha256-equal; fds return to the start', async () => {
    const uuids = Array.from({ length: 10 }, (_, i) => `adv-load-${i}`);
    const cookies = await Promise.all(uuids.map(register));
    const fdsBefore = dev.openFds();
    const hiddens = await Promise.all(
      Array.from({ length: 1_000 }, (_, i) => park(cookies[i % 10] as string)),
    );
    await new Promise((r) => setTimeout(r, 500));
    // Which hidden socket a mobile client meets is the relay's choice, so each side sends
    // sha256(payload) ‖ payload and checks what it receives against the hash in front of it.
    const framed = (size: number) => {
      const body = randomBytes(size);
      return Buffer.concat([Buffer.from(sha256(body), 'hex'), body]);
    };
    const intact = (b: Buffer) =>
      b.length > 32 && sha256(b.subarray(32)) === b.subarray(0, 32).toString('hex');
    const hiddenOk = hiddens.map(async (hidden, i) => {
      const got = readAll(hidden);
      await firstBytes(hidden); // +OK
      hidden.end(framed(16 * 1024 + (i % 97)));
      const h = await got;
      return h.subarray(0, 4).toString() === '+OK\n' && intact(h.subarray(4));
    });
    const mobileOk = hiddens.map(async (_, i) => {
      const mobile = await dial(dev.relayPort);
      const got = readAll(mobile);
      mobile.end(
        Buffer.concat([
          Buffer.from(`I${mobileCookieFor(cookies[i % 10] as string)}\n`),
          framed(16 * 1024 + (i % 89)),
        ]),
      );
      const m = await got;
      return m.subarray(0, 4).toString() === '+OK\n' && intact(m.subarray(4));
    });
    const results = await Promise.all([...hiddenOk, ...mobileOk]);
    expect(results.filter(Boolean).length).toBe(2_000);
    // Every relay-side socket is gone once the clients have closed theirs.
    const until = Date.now() + 10_000;
    while (dev.openFds() > fdsBefore && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    expect(dev.openFds()).toBeLessThanOrEqual(fdsBefore);
  }, 120_000);
});

describe('logs', () => {
  it('contain no TOTP secret, code or cookie', () => {
    expect(ledger.leakedIn(dev.output())).toEqual([]);
  });
});
