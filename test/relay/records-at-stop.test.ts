/**
 * Issue 29: the relay process writes its records asynchronously (relay/log-sink.ts: queued while a
 * write is in flight, not a blocking write per record). A clean stop loses none: after a burst of
 * rendezvous and an immediate SIGTERM, every rendezvous has its record on stdout (a pipe, as a
 * container's), before the drain's own records, and every line is whole JSON.
 */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { mobileCookieFor } from '../../server/cookies.js';
import { provisionIdentity } from '../../server/identities.js';
import { registerHiddenServer } from '../../server/register.js';
import { dial } from '../support/net.js';
import { embeddedStore } from '../support/store.js';

const MAIN = fileURLToPath(new URL('../../relay/main.ts', import.meta.url));
/** Rendezvous in the burst (below the relay's 64 parked sockets per cookie). */
const BURST = 60;
let store: Awaited<ReturnType<typeof embeddedStore>>;

beforeAll(async () => {
  store = await embeddedStore();
});
afterAll(async () => {
  await store?.close();
});

/** The first chunk `s` receives, as text. */
const firstText = (s: Socket) => new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));

describe('the relay process at a clean stop', () => {
  it('has written the record of every rendezvous of a burst when SIGTERM comes at once', async () => {
    const id = await provisionIdentity(store.store, { uuid: 'records-at-stop' });
    const triple = await registerHiddenServer(
      store.store,
      { relayHost: '127.0.0.1', relayPort: 1 },
      id.uuid,
      currentCode(id),
    );
    const r = triple.cookie.slice(1);
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
      env: {
        ...process.env,
        AWS_ENDPOINT_URL_DYNAMODB: store.endpoint,
        AWS_REGION: 'local',
        AWS_ACCESS_KEY_ID: 'local',
        AWS_SECRET_ACCESS_KEY: 'local',
        RENDEZVOUS_TABLE: store.store.table,
        RELAY_BIND: '127.0.0.1',
        RELAY_PORT: '0',
        RELAY_HTTP_PORT: 'off',
        RELAY_DRAIN_GRACE_MS: '0',
        RELAY_MAX_HANDSHAKES_PER_SOURCE: '1000',
        RELAY_MAX_SPLICES_PER_SOURCE: '1000',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let text = '';
    child.stdout.on('data', (c: Buffer) => {
      text += c.toString();
    });
    const exit = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    const deadline = Date.now() + 60_000;
    while (!text.includes('"relay listening"')) {
      if (Date.now() > deadline) throw new Error(`relay did not start: ${text}`);
      await new Promise((res) => setTimeout(res, 50));
    }
    const listening = JSON.parse(text.split('\n').find((l) => l.includes('"relay listening"')) as string);
    const port = Number(String(listening.generic).split(':').pop());

    // The burst: BURST hidden sockets parked, BURST mobile clients paired with them at once, each
    // rendezvous ended by both sides as soon as it began.
    const hiddens = await Promise.all(
      Array.from({ length: BURST }, async () => {
        const h = await dial(port);
        const ok = firstText(h);
        h.write(`R${r}\n`);
        return { h, ok };
      }),
    );
    // The relay does not answer a park: a first pairing shows the parks have been read.
    const mobiles = await Promise.all(
      Array.from({ length: BURST }, async () => {
        const m = await dial(port);
        const ok = firstText(m);
        m.write(`I${mobileCookieFor(r)}\n`);
        return { m, ok };
      }),
    );
    for (const { ok } of mobiles) expect(await ok).toBe('+OK\n');
    for (const { ok } of hiddens) expect(await ok).toBe('+OK\n');
    const closed = [...hiddens.map((x) => x.h), ...mobiles.map((x) => x.m)].map(
      (s) => new Promise((res) => s.once('close', res)),
    );
    for (const { h } of hiddens) h.end();
    for (const { m } of mobiles) m.end();
    await Promise.all(closed);
    child.kill('SIGTERM');
    expect(await exit).toBe(0);

    const lines = text.trimEnd().split('\n');
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const ended = records.filter((x) => x.event === 'rendezvous');
    expect(ended).toHaveLength(BURST);
    expect(new Set(ended.map((x) => x.rid)).size).toBe(BURST);
    for (const x of ended) expect(x).toMatchObject({ uuid: id.uuid, end: 'closed', hops: 0 });
    // The drain flushes the usage of the burst: one record for the identity (issue 30), before `drained`.
    const usage = records.filter((x) => x.event === 'usage');
    expect(usage.map((x) => [x.uuid, x.genericRendezvous])).toEqual([[id.uuid, BURST]]);
    const own = records.filter((x) => x.event !== 'usage');
    expect(own.map((x) => x.msg).slice(-3)).toEqual(['stopping', 'draining', 'drained']);
  }, 120_000);
});
