/**
 * Issue 30: the per-identity bandwidth cap (`limits.bytesPerSecond`, both directions together)
 * through real relays, real sockets and dynalite. Clients push as fast as they can; what arrives
 * is counted over a window after a warm-up, so what is asserted is the rate the relays enforce
 * (caps far below what a loaded 2-core machine moves through a relay), not the machine's speed.
 * Two relays share one store; each mobile client reaches the relay its hidden server is parked on.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeForStep, timeStep } from '../../core/totp.js';
import { shareOf } from '../../relay/bandwidth.js';
import type { Relay } from '../../relay/server.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** The measurement window of the acceptance criterion. */
const WINDOW_MS = 10_000;

let c: Awaited<ReturnType<typeof startCluster>>;
const opened: Socket[] = [];

beforeAll(async () => {
  c = await startCluster(2, {
    // Limits changes are read within one revalidation round; leases are refreshed twice a second.
    relay: { revalidateMs: 300, bandwidthLeaseMs: 500, idleTimeoutMs: 0 },
  });
}, 60_000);
afterAll(async () => {
  for (const s of opened) s.destroy();
  await waitFor(() => c.relays.every((r) => r.splices === 0), 20_000, 'splices ended').catch(() => {});
  await c?.close();
});

/**
 * A provisioned, registered identity: its hidden (`R`) and mobile (`I`) cookies, and a code the
 * registration did not use (the next step's, inside the ±1 step window) for an HTTP CONNECT.
 */
async function identity(name: string): Promise<{ uuid: string; r: string; i: string; nextCode: string }> {
  const id = await provisionIdentity(c.store, { uuid: `bw-${name}-${Date.now()}` });
  const step = timeStep(id, Date.now());
  const res = await fetch(`${c.apiUrl}/?uuid=${id.uuid}&response=${codeForStep(id, step)}`, {
    method: 'PUT',
  });
  const r = ((await res.json()) as { result: { cookie: string } }).result.cookie.slice(1);
  return { uuid: id.uuid, r, i: mobileCookieFor(r), nextCode: codeForStep(id, step + 1) };
}

/** One side of a rendezvous: bytes it received, and a switch to push bytes as fast as it can. */
interface End {
  socket: Socket;
  received: number;
  /** The first KiB received, as text (the handshake). */
  head: string;
  /** Starts pushing as fast as the socket takes it. */
  push(): void;
  /** Bytes pushed that the kernel took (handed on, not waiting in the socket's own buffer). */
  sent(): number;
}

function end(socket: Socket): End {
  opened.push(socket);
  socket.on('error', () => {});
  let written = 0;
  const e: End = {
    socket,
    received: 0,
    head: '',
    sent: () => written - socket.writableLength,
    push: () => {
      const block = Buffer.alloc(64 * KiB, 0x61);
      const more = () => {
        while (!socket.destroyed) {
          written += block.length;
          if (!socket.write(block)) break;
        }
      };
      socket.on('drain', more);
      more();
    },
  };
  socket.on('data', (d: Buffer) => {
    if (e.received < KiB) e.head += d.subarray(0, KiB - e.received).toString('latin1');
    e.received += d.length;
  });
  return e;
}

/** Parks a hidden server on `hiddenRelay`, pairs a mobile client through `mobileRelay`. */
async function pair(
  id: { r: string; i: string },
  hiddenRelay: Relay,
  mobileRelay: Relay = hiddenRelay,
): Promise<{ hidden: End; mobile: End }> {
  const before = hiddenRelay.lot.count('generic', id.i);
  const hidden = end(await dial(hiddenRelay.address.port));
  hidden.socket.write(`R${id.r}\n`);
  await waitFor(() => hiddenRelay.lot.count('generic', id.i) > before, 10_000, 'parked');
  const mobile = end(await dial(mobileRelay.address.port));
  mobile.socket.write(`I${id.i}\n`);
  // Both read `+OK\n` once paired: the hidden server may write only then.
  await waitFor(() => hidden.received >= 4 && mobile.received >= 4, 10_000, 'paired');
  return { hidden, mobile };
}

/**
 * HTTP-specific: parks a hidden server by CONNECT on `relay`'s HTTP port, sends a mobile client's
 * GET through it; the hidden server answers with a long body. The mobile end counts the answer.
 */
async function pairHttp(uuid: string, code: string, relay: Relay): Promise<{ hidden: End; mobile: End }> {
  const port = relay.httpAddress?.port as number;
  const hidden = end(await dial(port));
  hidden.socket.write(`CONNECT uuid:${uuid}?response=${code} HTTP/1.1\r\n\r\n`);
  await waitFor(() => relay.lot.count('http', uuid) >= 1, 10_000, 'parked by CONNECT');
  const mobile = end(await dial(port));
  mobile.socket.write(`GET /?rendezvous=${uuid} HTTP/1.1\r\nHost: r\r\n\r\n`);
  // Only once the request arrived may the hidden server write (before it, its bytes are refused).
  await waitFor(() => hidden.head.includes('GET /'), 10_000, 'request forwarded');
  hidden.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${1 << 30}\r\n\r\n`);
  return { hidden, mobile };
}

/** Bytes/s arriving at `ends` over `ms`. */
async function rate(ends: End[], ms: number): Promise<number> {
  const sum = () => ends.reduce((n, e) => n + e.received, 0);
  const n0 = sum();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  return ((sum() - n0) * 1000) / (performance.now() - t0);
}

/** Waits until a 2 s window's rate is within ±10 % of `cap` (the warm-up), or fails. */
async function settled(ends: End[], cap: number, what: string): Promise<void> {
  const until = Date.now() + 30_000;
  let last = 0;
  while (Date.now() < until) {
    last = await rate(ends, 2_000);
    if (Math.abs(last - cap) <= cap * 0.1) return;
  }
  throw new Error(`${what}: ${Math.round(last)} B/s against a cap of ${cap} B/s after 30 s`);
}

/** The relays holding a live bandwidth lease for `uuid` (read by writing a lease that is already over). */
async function leases(uuid: string): Promise<string[]> {
  const probe = 'test-probe';
  const live = await c.store.refreshBandwidthLease(uuid, {
    relayId: probe,
    used: 0,
    limited: false,
    liveUntil: 0,
  });
  return live.map((l) => l.relayId).filter((r) => r !== probe);
}

/** Ends every socket of the rendezvous given (the identity's bucket goes with its last splice). */
function close(...pairs: { hidden: End; mobile: End }[]): void {
  for (const p of pairs) {
    p.hidden.socket.destroy();
    p.mobile.socket.destroy();
  }
}

describe('the split across relays (max-min fair share)', () => {
  it('relays held back share what the others leave; one alone has the whole cap', () => {
    expect(shareOf(1000, [])).toBe(1000);
    expect(shareOf(1000, [{ used: 0, limited: true }])).toBe(500);
    expect(shareOf(1000, [{ used: 100, limited: false }])).toBe(900);
    expect(shareOf(1000, [{ used: 700, limited: false }])).toBe(500);
    expect(
      shareOf(900, [
        { used: 100, limited: false },
        { used: 0, limited: true },
      ]),
    ).toBe(400);
  });
});

describe('bandwidth cap per identity', () => {
  // The two acceptance measurements run side by side (different identities, 10 s windows each):
  // what they assert is the rate the relays let through, which their neighbour does not change.
  it.concurrent('one relay: three rendezvous (generic each way, HTTP) share 1 MiB/s within ±10 % over 10 s', async ({
    expect,
  }) => {
    const relay = c.relays[0] as Relay;
    const id = await identity('one');
    const cap = MiB;
    await c.store.setLimits(id.uuid, { bytesPerSecond: cap });
    const up = await pair(id, relay);
    const down = await pair(id, relay);
    const web = await pairHttp(id.uuid, id.nextCode, relay);
    up.mobile.push(); // mobile → hidden
    down.hidden.push(); // hidden → mobile
    web.hidden.push(); // an HTTP answer's body
    const ends = [up.hidden, down.mobile, web.mobile];
    await settled(ends, cap, 'warm-up');
    const before = ends.map((e) => e.received);
    const measured = await rate(ends, WINDOW_MS);
    expect(Math.abs(measured - cap) / cap, `${Math.round(measured)} B/s`).toBeLessThanOrEqual(0.1);
    // Fair enough: no rendezvous, direction or protocol starves another.
    const got = ends.map((e, k) => e.received - (before[k] as number));
    expect(Math.min(...got) / Math.max(...got), got.join(' ')).toBeGreaterThan(0.6);
    // Held back, not buffered: what the sender pushed and the hidden server has not received is
    // what the kernels' socket buffers hold (a few MiB), not the hundreds of MiB pushed at
    // ≥ 20 MB/s over the test's 12 s had the relay queued what its throttle held back.
    expect(up.mobile.sent() - (up.hidden.received - 4)).toBeLessThan(32 * MiB);
    close(up, down, web);
  }, 90_000);

  it.concurrent('two relays: rendezvous local to each and one through a peer link, 1 MiB/s in all within ±10 % over 10 s', async ({
    expect,
  }) => {
    const [r0, r1] = c.relays as [Relay, Relay];
    const id = await identity('two');
    const cap = MiB;
    await c.store.setLimits(id.uuid, { bytesPerSecond: cap });
    const first = await pair(id, r0);
    const second = await pair(id, r1);
    // Nothing parked on r1 now: its mobile client reaches the hidden server on r0 through a peer
    // link, and only r1 (the relay the mobile client reached) throttles it.
    const third = await pair(id, r0, r1);
    first.mobile.push();
    second.hidden.push();
    third.mobile.push();
    const ends = [first.hidden, second.mobile, third.hidden];
    await settled(ends, cap, 'warm-up across relays');
    // Each relay holds a lease on a share of the cap while it carries the identity's traffic.
    expect((await leases(id.uuid)).sort()).toEqual([r0.relayId, r1.relayId].sort());
    const measured = await rate(ends, WINDOW_MS);
    expect(Math.abs(measured - cap) / cap, `${Math.round(measured)} B/s`).toBeLessThanOrEqual(0.1);
    close(first, second, third);
    // Idle identities cost nothing: the relays drop their leases when the traffic ends.
    await waitFor(async () => (await leases(id.uuid)).length === 0, 10_000, 'leases dropped');
  }, 90_000);

  it('a cap changed on a running rendezvous takes effect; no cap is not slowed, a cap set later is', async () => {
    const relay = c.relays[0] as Relay;
    const id = await identity('change');
    // No cap: far faster than any cap of this file (loopback through a relay moves 100s of MB/s).
    const p = await pair(id, relay);
    p.mobile.push();
    const free = await rate([p.hidden], 2_000);
    expect(free).toBeGreaterThan(8 * MiB);
    // A cap set on the running rendezvous.
    await c.store.setLimits(id.uuid, { bytesPerSecond: 768 * KiB });
    await settled([p.hidden], 768 * KiB, 'cap set while running');
    // Lowered while running.
    await c.store.setLimits(id.uuid, { bytesPerSecond: 256 * KiB });
    await settled([p.hidden], 256 * KiB, 'cap lowered while running');
    const low = await rate([p.hidden], 4_000);
    expect(Math.abs(low - 256 * KiB) / (256 * KiB)).toBeLessThanOrEqual(0.1);
    // Removed while running: fast again.
    await c.store.setLimits(id.uuid, undefined);
    await waitFor(async () => (await rate([p.hidden], 500)) > 8 * MiB, 15_000, 'cap removed');
    close(p);
  }, 120_000);
});
