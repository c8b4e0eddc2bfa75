/**
 * The setup most integration tests share: a local stack on free ports, identities provisioned in
 * its store, and hidden servers exposing a local target through it. One place, so every test
 * file starts the stack the same way and closes what it started.
 */
import { onTestFinished } from 'vitest';
import { currentCode } from '../../core/totp.js';
// The public API's export, as a user gets it (the tests that expose through it test that export).
import { type ExposeOptions, exposeHiddenServer, type HiddenServer } from '../../index.js';
import { type LocalStack, type LocalStackOptions, startLocalStack } from '../../local/stack.js';
import { type ProvisionedIdentity, provisionIdentity } from '../../server/identities.js';
import type { Store } from '../../server/store/index.js';
import {
  createExternalTable,
  dropExternalTable,
  externalEndpoint,
  externalRegion,
} from './external-store.js';

/** Every port 0: the OS picks free ones, so test files run side by side without clashing. */
export const FREE_PORTS = { apiPort: 0, relayPort: 0, httpPort: 0, storePort: 0 } as const;

/**
 * Starts a local stack on free ports with `opts` (the relay's and policy's overrides). The
 * caller closes it (`await stack?.close()` in its afterAll, after what runs through it). With
 * RENDEZVOUS_TEST_DYNAMODB_ENDPOINT set, the stack runs on a fresh table there (dropped on close)
 * instead of an embedded store.
 */
export async function startStack(
  opts: Omit<LocalStackOptions, keyof typeof FREE_PORTS> = {},
): Promise<LocalStack> {
  const external = opts.dataDir === undefined ? externalEndpoint() : undefined;
  if (!external) return startLocalStack({ ...FREE_PORTS, ...opts });
  const table = await createExternalTable(external, opts.table ?? 'rendezvous-stack');
  try {
    const stack = await startLocalStack({
      ...FREE_PORTS,
      ...opts,
      table,
      storeEndpoint: external,
      storeRegion: externalRegion(),
    });
    return {
      ...stack,
      close: async () => {
        await stack.close();
        await dropExternalTable(external, table);
      },
    };
  } catch (err) {
    await dropExternalTable(external, table);
    throw err;
  }
}

/** A provisioned identity and the code its authenticator shows (now, or at `nowMs`). */
export interface TestIdentity extends ProvisionedIdentity {
  code(nowMs?: number): string;
}

/** Provisions an identity in `where.store` (a stack or an embedded store) with provisionIdentity's options. */
export async function provision(
  where: { store: Store },
  opts: Parameters<typeof provisionIdentity>[1] = {},
): Promise<TestIdentity> {
  const id = await provisionIdentity(where.store, opts);
  return { ...id, code: (nowMs?: number) => currentCode(id, nowMs) };
}

/** What `expose` needs of a stack: where the API and the HTTP-specific port are. */
export type ExposeVia = Pick<LocalStack, 'apiUrl' | 'httpPort'>;

/**
 * Exposes `target` (a port on 127.0.0.1, or host and port) as the hidden server `id` through
 * `via`: by the API for the generic protocol, at the relay's HTTP port for `protocol: 'http'`
 * (unless `opts` names `api` or `relay`). Called inside a test, the hidden server is closed
 * when that test finishes; called in a beforeAll, the caller closes it.
 */
export function expose(
  via: ExposeVia,
  id: { uuid: string; secret: string },
  target: number | { host: string; port: number },
  opts: Partial<Omit<ExposeOptions, 'uuid' | 'target'>> = {},
): HiddenServer {
  const where =
    opts.protocol === 'http'
      ? { relay: opts.relay ?? `http://127.0.0.1:${via.httpPort}` }
      : { api: opts.api ?? via.apiUrl };
  const server = exposeHiddenServer({
    ...opts,
    ...where,
    uuid: id.uuid,
    secret: opts.secret ?? id.secret,
    target: typeof target === 'number' ? { host: '127.0.0.1', port: target } : target,
  } as ExposeOptions);
  // Not awaited: a rendezvous the test left open must not hold the next test back.
  if (insideTest()) onTestFinished(() => void server.close());
  return server;
}

/** Whether a test is running now (onTestFinished can register), not a beforeAll or collection. */
function insideTest(): boolean {
  try {
    onTestFinished(() => undefined);
    return true;
  } catch {
    return false;
  }
}
