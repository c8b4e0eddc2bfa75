/**
 * Issue 26 item 7: rotating a secret or disabling an identity ended the sockets parked with it,
 * but a live generic splice and an upgraded HTTP tunnel made before the revocation kept running
 * (25 s later, and up to the idle timeout). Revocation now ends live rendezvous of the identity
 * too, at the next re-check round, and their records say why.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import {
  type ProvisionedIdentity,
  provisionIdentity,
  rotateIdentitySecret,
  setIdentityDisabled,
} from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { closedWithin, dial } from '../support/net.js';
import { waitFor } from '../support/wait.js';

type Cluster = Awaited<ReturnType<typeof startCluster>>;
let c: Cluster;
const opened: Socket[] = [];

beforeAll(async () => {
  // Short rounds: the test waits for the round after the revocation, not 10 s.
  // Two relays: hidden servers park on relay 0; a mobile client may arrive at relay 1 (peer link).
  c = await startCluster(2, { relay: { revalidateMs: 300, pairWaitMs: 2_000 } });
});
afterAll(async () => {
  for (const s of opened) s.destroy();
  // Let the relays' bookkeeping of the closed sockets reach the store before it closes.
  await waitFor(() => (c?.relays ?? []).every((r) => r.lot.size === 0 && r.splices === 0), 20_000, 'closed');
  await c?.close();
});

/** Collects what `s` receives; `until(text)` resolves once it has arrived. */
function reader(s: Socket) {
  let text = '';
  s.on('data', (d: Buffer) => {
    text += d.toString('latin1');
  });
  s.on('error', () => {});
  return {
    until: (want: string) => waitFor(() => text.includes(want), 5_000, `"${want}" received`),
  };
}

async function open(port: number): Promise<Socket> {
  const s = await dial(port);
  opened.push(s);
  return s;
}

/** A live generic splice of `uuid`: both sides past `+OK`, a byte carried each way. */
async function liveGeneric(uuid: string, mobileRelay = 0) {
  const id = await provisionIdentity(c.store, { uuid });
  const put = await fetch(`${c.apiUrl}/?uuid=${uuid}&response=${currentCode(id)}`, { method: 'PUT' });
  const r = ((await put.json()) as { result: { cookie: string } }).result.cookie;
  const i = ((await (await fetch(`${c.apiUrl}/?uuid=${uuid}`)).json()) as { result: { cookie: string } })
    .result.cookie;
  const port = c.relays[0]?.address.port as number;
  const hidden = await open(port);
  const h = reader(hidden);
  hidden.write(`${r}\n`);
  await waitFor(() => (c.relays[0]?.lot.sizeOf('generic') ?? 0) > 0, 5_000, 'parked');
  const mobile = await open(c.relays[mobileRelay]?.address.port as number);
  const m = reader(mobile);
  mobile.write(`${i}\nping`);
  await h.until('+OK\nping');
  hidden.write('pong');
  await m.until('+OK\npong');
  return { hidden, mobile, h, m };
}

/** A live upgraded HTTP tunnel of `uuid`: a 101, then a frame carried each way. */
async function liveTunnel(uuid: string, secret?: ProvisionedIdentity) {
  const id = secret ?? (await provisionIdentity(c.store, { uuid }));
  const port = c.relays[0]?.httpAddress?.port as number;
  const hidden = await open(port);
  const h = reader(hidden);
  hidden.write(`CONNECT uuid:${uuid}?response=${currentCode(id)} HTTP/1.1\r\n\r\n`);
  await h.until('HTTP/1.1 200');
  await waitFor(() => (c.relays[0]?.lot.count('http', uuid) ?? 0) === 1, 5_000, 'parked');
  const mobile = await open(port);
  const m = reader(mobile);
  mobile.write(
    `GET /ws?rendezvous=${uuid} HTTP/1.1\r\nHost: r\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n`,
  );
  await h.until('GET /ws');
  hidden.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
  await m.until('HTTP/1.1 101');
  mobile.write('frame-up');
  await h.until('frame-up');
  hidden.write('frame-down');
  await m.until('frame-down');
  return { hidden, mobile, h, m };
}

/** The relay's `rendezvous ended` records of `uuid`. */
const endRecords = (uuid: string) =>
  (c.logs[0] ?? [])
    .filter((l) => l.msg === 'rendezvous ended' && l.fields?.uuid === uuid)
    .map((l) => l.fields);

describe('regression: live rendezvous survived rotate and disable (issue 26.7)', () => {
  for (const how of ['rotated', 'disabled'] as const) {
    it(`identity ${how}: a live generic splice and an upgraded HTTP tunnel end, and their records say why`, async () => {
      const generic = await liveGeneric(`live-generic-${how}`);
      const tunnel = await liveTunnel(`live-tunnel-${how}`);
      for (const uuid of [`live-generic-${how}`, `live-tunnel-${how}`]) {
        if (how === 'rotated') await rotateIdentitySecret(c.store, uuid);
        else await setIdentityDisabled(c.store, uuid, true);
      }
      // Ended at the round after the revocation (rounds every 300 ms here; generous on a loaded machine).
      for (const s of [generic.mobile, generic.hidden, tunnel.mobile, tunnel.hidden])
        await closedWithin(s, 20_000);
      for (const uuid of [`live-generic-${how}`, `live-tunnel-${how}`]) {
        await waitFor(() => endRecords(uuid).length > 0, 5_000, `${uuid} record`);
        expect(endRecords(uuid)[0]).toMatchObject({ end: 'revoked', reason: `identity ${how}` });
      }
      // The operator console's "last rendezvous" says why too.
      await waitFor(
        async () =>
          (await c.store.getLastRendezvous(`live-tunnel-${how}`))?.http?.reason === `identity ${how}`,
        10_000,
        'last rendezvous record',
      );
    });
  }

  it('through a peer link: the relay holding the hidden server ends it, and the link takes the mobile side along', async () => {
    const uuid = 'live-generic-peer';
    const generic = await liveGeneric(uuid, 1);
    await rotateIdentitySecret(c.store, uuid);
    for (const s of [generic.mobile, generic.hidden]) await closedWithin(s, 20_000);
    await waitFor(() => endRecords(uuid).length > 0, 5_000, 'record');
    expect(endRecords(uuid)[0]).toMatchObject({ end: 'revoked', reason: 'identity rotated', hops: 1 });
  });

  it('a rendezvous of another identity, and a tunnel made with the new secret after a rotation, go on', async () => {
    const bystander = await liveGeneric('live-bystander');
    await provisionIdentity(c.store, { uuid: 'live-after' });
    const rotated = await rotateIdentitySecret(c.store, 'live-after');
    const tunnel = await liveTunnel('live-after', rotated);
    // Several rounds read the rotation's change notice meanwhile (rounds every 300 ms).
    await new Promise((r) => setTimeout(r, 2_000));
    bystander.mobile.write('still here');
    await bystander.h.until('still here');
    tunnel.mobile.write('frame-after');
    await tunnel.h.until('frame-after');
    expect(endRecords('live-bystander')).toEqual([]);
    expect(endRecords('live-after')).toEqual([]);
  });
});
