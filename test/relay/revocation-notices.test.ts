/**
 * Issue 29: revocations reach parked sockets through change notices alone — no sweep over every
 * parked key. Every case here finishes in seconds, where any sweep the relay ever had ran once per
 * 10 minutes, so only the notices (or the relay's own clock, for an expiry) can end these parks.
 *
 * - a rotation, a disable, an identity deleted, and a cookie replaced by a new PUT end the parks
 *   of that identity at the next round;
 * - a notice that lands before its change (the writer's order now, and the PUT path's notice
 *   written beside its registration) is honoured when the change lands rounds later;
 * - a cookie that expires while parked is refused at the next round, from what the relay learned
 *   when the park authenticated (no store read says so: nothing in the store changes).
 */
import type { Socket } from 'node:net';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeForStep, timeStep } from '../../core/totp.js';
import { type Relay, startRelay } from '../../relay/server.js';
import { mobileCookieFor, newCookie } from '../../server/cookies.js';
import {
  deleteIdentity,
  provisionIdentity,
  rotateIdentitySecret,
  setIdentityDisabled,
} from '../../server/identities.js';
import { type RegistrationPolicy, registerHiddenServer } from '../../server/register.js';
import { SPLIT_COOKIE_SCHEME } from '../../server/store/index.js';
import { dial } from '../support/net.js';
import { embeddedStore } from '../support/store.js';
import { waitFor } from '../support/wait.js';

// Short rounds, so the test waits for rounds rather than 10 s each.
const ROUND_MS = 300;
const policy: RegistrationPolicy = { relayHost: '127.0.0.1', relayPort: 8899 };

let env: Awaited<ReturnType<typeof embeddedStore>>;
let relay: Relay;
let raw: DynamoDBDocumentClient;
const parked: Socket[] = [];

/** Registers `uuid` (provisioned on first use) with the code of `stepOffset` steps ahead; its `R` cookie. */
async function register(uuid: string, stepOffset = 0, p: RegistrationPolicy = policy): Promise<string> {
  const id = (await env.store.getIdentity(uuid)) ?? (await provisionIdentity(env.store, { uuid }));
  const step = timeStep(id, Date.now()) + stepOffset;
  return (await registerHiddenServer(env.store, p, uuid, codeForStep(id, step))).cookie;
}

/** Parks an `R` cookie; `text` is what the relay said on it. */
async function park(rCookie: string) {
  const socket = await dial(relay.address.port);
  let text = '';
  socket.on('data', (c: Buffer) => {
    text += c.toString();
  });
  socket.on('error', () => {});
  socket.write(`${rCookie}\n`);
  parked.push(socket);
  await waitFor(() => relay.lot.count('generic', mobileCookieFor(rCookie.slice(1))) > 0, 10_000, 'parked');
  return { socket, text: () => text };
}

const rounds = (n: number) => new Promise((r) => setTimeout(r, n * ROUND_MS));

/** Waits (generously: a loaded machine) until the relay ended every park in `ps` (its FIN read). */
const closed = (...ps: Array<{ socket: Socket }>) =>
  waitFor(() => ps.every((p) => p.socket.readableEnded), 20_000, 'parks closed by the relay');

beforeAll(async () => {
  env = await embeddedStore('rendezvous-notices');
  relay = await startRelay({ store: env.store, port: 0, revalidateMs: ROUND_MS });
  raw = DynamoDBDocumentClient.from(
    new DynamoDBClient({
      endpoint: env.endpoint,
      region: 'local',
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    }),
  );
}, 60_000);

afterAll(async () => {
  for (const s of parked) s.destroy();
  await relay?.close();
  raw?.destroy();
  await env?.close();
});

describe('revocation reaches parked sockets without a sweep', () => {
  it('a rotation, a disable, a deletion and a replacing PUT each end that identity’s parks; others stay', async () => {
    const rotated = await park(await register('n-rotated'));
    const disabled = await park(await register('n-disabled'));
    const deleted = await park(await register('n-deleted'));
    const replaced = await park(await register('n-replaced'));
    const kept = await park(await register('n-kept'));
    await rounds(3);
    await rotateIdentitySecret(env.store, 'n-rotated');
    await setIdentityDisabled(env.store, 'n-disabled', true);
    await deleteIdentity(env.store, 'n-deleted');
    await register('n-replaced', 1);
    await closed(rotated, disabled, deleted, replaced);
    expect(rotated.text()).toMatch(/^-ERR unknown cookie/);
    expect(disabled.text()).toMatch(/^-ERR unknown cookie/);
    expect(deleted.text()).toMatch(/^-ERR unknown cookie/);
    expect(replaced.text()).toBe('-ERR cookie replaced by a newer registration\n');
    await rounds(3);
    expect(kept.socket.readableEnded).toBe(false);
    expect(kept.text()).toBe('');
  }, 60_000);

  it('a notice that landed rounds before its change is honoured when the change lands', async () => {
    const uuid = 'n-early';
    const r = await register(uuid);
    const p = await park(r);
    const revokedUuid = 'n-early-revoked';
    const q = await park(await register(revokedUuid));
    // The notices first (as writers now order them, and as the PUT path writes its notice beside
    // its registration); the relay reads them and finds nothing changed yet.
    await env.store.noteChange(uuid);
    await env.store.noteChange(revokedUuid);
    await rounds(4);
    expect(p.text()).toBe('');
    // Then the changes, written straight to the table with no notice of their own: a new
    // registration replacing the parked cookie, and a registration removed.
    const now = Math.floor(Date.now() / 1000);
    const cookie = mobileCookieFor(newCookie());
    await raw.send(
      new PutCommand({
        TableName: env.store.table,
        Item: { pk: `COOKIE#${cookie}`, sk: 'COOKIE', uuid, expiresAt: now + 3600 },
      }),
    );
    await raw.send(
      new PutCommand({
        TableName: env.store.table,
        Item: {
          pk: `SERVER#${uuid}`,
          sk: 'REGISTRATION',
          uuid,
          cookie,
          cookieScheme: SPLIT_COOKIE_SCHEME,
          host: '127.0.0.1',
          port: 8899,
          registeredAt: now,
          expiresAt: now + 3600,
        },
      }),
    );
    await raw.send(
      new DeleteCommand({
        TableName: env.store.table,
        Key: { pk: `SERVER#${revokedUuid}`, sk: 'REGISTRATION' },
      }),
    );
    await closed(p, q);
    expect(p.text()).toBe('-ERR cookie replaced by a newer registration\n');
    expect(q.text()).toMatch(/^-ERR unknown cookie/);
  }, 60_000);

  it('a cookie that expires while parked is refused at the next round', async () => {
    const p = await park(await register('n-expiring', 0, { ...policy, cookieTtlSeconds: 2 }));
    const kept = await park(await register('n-lasting'));
    await closed(p);
    expect(p.text()).toBe('-ERR cookie expired, register again\n');
    expect(kept.socket.readableEnded).toBe(false);
  }, 60_000);
});
