/**
 * The relay's CONNECT door and the code rule (issues 25 and 26 #10): one-time proofs park at
 * once whatever strangers guessed, from any address; compat identities' refusals keep the
 * original's statuses with `permanent:false`; a right code for a disabled identity is told so.
 * Strangers come from their own loopback addresses (127.0.x.y), as separate hosts would.
 */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode, ORIGINAL_COMPAT, proofForStep, timeStep } from '../../core/totp.js';
import { provisionIdentity, setIdentityDisabled } from '../../server/identities.js';
import { originalAsciiSecret, originalCode, stepAt } from '../compat/original-model.js';
import { startCluster } from '../support/cluster.js';
import { waitFor } from '../support/wait.js';

let cluster: Awaited<ReturnType<typeof startCluster>>;
let httpPort: number;

beforeAll(async () => {
  // The default guess limits (10 per uuid, 5 per source, 5 minutes).
  cluster = await startCluster(1);
  httpPort = cluster.relays[0]?.httpAddress?.port as number;
}, 60_000);
afterAll(async () => cluster?.close());

/** Connects to the relay's HTTP port from `from` (a loopback address). */
function dialFrom(from: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port: httpPort, localAddress: from }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Sends a CONNECT from `from`; resolves with the status, the JSON body (if any) and the socket. */
async function connectAs(uuid: string, response: string, from: string) {
  const s = await dialFrom(from);
  s.write(`CONNECT uuid:${uuid}?response=${response} HTTP/1.1\r\nHost: relay\r\n\r\n`);
  const text = await new Promise<string>((resolve) => {
    let t = '';
    const done = () => resolve(t);
    s.on('data', (c: Buffer) => {
      t += c.toString('latin1');
      // A 200 keeps the socket open (parked): its head is the whole answer.
      if (/^HTTP\/1\.1 200/.test(t) && t.includes('\r\n\r\n')) done();
    });
    s.on('end', done);
    s.on('error', done);
    setTimeout(done, 10_000);
  });
  const at = text.indexOf('\r\n\r\n');
  const rest = at === -1 ? '' : text.slice(at + 4);
  return {
    status: Number(text.slice(9, 12)),
    body: rest ? (JSON.parse(rest) as { error: { permanent: boolean; diagnostic: string } }) : undefined,
    socket: s,
  };
}

async function roomInStep(ms: number) {
  const left = 30_000 - (Date.now() % 30_000);
  if (left < ms) await new Promise((r) => setTimeout(r, left + 50));
}

const wrong = (right: string) => right.replace(/.$/, (d) => String((Number(d) + 1) % 10));

describe('one-time proofs at CONNECT (issue 26 #10)', () => {
  it('after 100 strangers` wrong codes, a proof from a new address parks at once', async () => {
    await roomInStep(15_000);
    const id = await provisionIdentity(cluster.store, { uuid: 'connect-siege' });
    const statuses: number[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const answers = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          connectAs(id.uuid, wrong(currentCode(id)), `127.0.${10 + batch}.${i + 1}`),
        ),
      );
      statuses.push(...answers.map((a) => a.status));
    }
    expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(10);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(80);
    // The right short code from a new address waits out the window; the proof does not.
    expect((await connectAs(id.uuid, currentCode(id), '127.0.99.1')).status).toBe(429);
    const parked = await connectAs(
      id.uuid,
      proofForStep(id, id.uuid, timeStep(id, Date.now())),
      '127.0.99.1',
    );
    expect(parked.status).toBe(200);
    parked.socket.destroy();
  }, 120_000);

  it('a proof parks; used again once its park is gone: 401 proof already used, not permanent', async () => {
    await roomInStep(10_000);
    const id = await provisionIdentity(cluster.store, { uuid: 'connect-proof-again' });
    const right = proofForStep(id, id.uuid, timeStep(id, Date.now()));
    const first = await connectAs(id.uuid, right, '127.0.51.1');
    expect(first.status).toBe(200);
    first.socket.destroy();
    await waitFor(() => cluster.relays[0]?.lot.count('http', id.uuid) === 0, 10_000, 'the park to end');
    const again = await connectAs(id.uuid, right, '127.0.51.1');
    expect(again).toMatchObject({
      status: 401,
      body: { error: { permanent: false, diagnostic: 'proof already used for this step' } },
    });
  });

  it('a wrong proof: 401, permanent; a disabled identity`s right proof: 403', async () => {
    await roomInStep(10_000);
    const id = await provisionIdentity(cluster.store, { uuid: 'connect-proof-answers' });
    const right = proofForStep(id, id.uuid, timeStep(id, Date.now()));
    const bad = await connectAs(
      id.uuid,
      right.replace(/^./, (d) => String((Number(d) + 1) % 10)),
      '127.0.50.1',
    );
    expect(bad).toMatchObject({ status: 401, body: { error: { permanent: true } } });
    await setIdentityDisabled(cluster.store, id.uuid, true);
    const disabled = await connectAs(id.uuid, right, '127.0.50.1');
    expect(disabled).toMatchObject({ status: 403, body: { error: { diagnostic: 'identity disabled' } } });
  });
});

describe('compat identities at CONNECT (issue 25)', () => {
  it('a wrong code: 401 with permanent:false (the original`s status and body); a strict identity keeps permanent:true', async () => {
    const secret = originalAsciiSecret();
    await provisionIdentity(cluster.store, { uuid: 'connect-compat', secret, compat: ORIGINAL_COMPAT });
    const bad = await connectAs(
      'connect-compat',
      wrong(originalCode(secret, stepAt(Date.now()), 6)),
      '127.0.60.1',
    );
    expect(bad).toMatchObject({ status: 401, body: { error: { permanent: false } } });
    const strict = await provisionIdentity(cluster.store, { uuid: 'connect-strict' });
    const refused = await connectAs(strict.uuid, wrong(currentCode(strict)), '127.0.60.2');
    expect(refused).toMatchObject({ status: 401, body: { error: { permanent: true } } });
  });

  it('a right code for a disabled compat identity: 403 identity disabled', async () => {
    await roomInStep(5_000);
    const secret = originalAsciiSecret();
    await provisionIdentity(cluster.store, { uuid: 'connect-compat-off', secret, compat: ORIGINAL_COMPAT });
    await setIdentityDisabled(cluster.store, 'connect-compat-off', true);
    const answer = await connectAs(
      'connect-compat-off',
      originalCode(secret, stepAt(Date.now())),
      '127.0.61.1',
    );
    expect(answer).toMatchObject({ status: 403, body: { error: { diagnostic: 'identity disabled' } } });
  });
});
