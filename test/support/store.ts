/**
 * A store per test file, with the table created: an embedded dynalite, or a fresh table on the
 * endpoint named by RENDEZVOUS_TEST_DYNAMODB_ENDPOINT (test/support/external-store.ts).
 */

import { startStoreServer } from '../../local/store-server.js';
import { Store } from '../../server/store/index.js';
import {
  createExternalTable,
  dropExternalTable,
  externalEndpoint,
  externalRegion,
} from './external-store.js';

/** Starts dynalite on a free port (or takes the external endpoint) and returns a Store on a fresh table. */
export async function embeddedStore(table = 'rendezvous-test') {
  const external = externalEndpoint();
  if (external) {
    const name = await createExternalTable(external, table);
    const store = new Store({ table: name, endpoint: external, region: externalRegion() });
    return {
      store,
      endpoint: external,
      close: async () => {
        store.close();
        await dropExternalTable(external, name);
      },
    };
  }
  const server = await startStoreServer({ port: 0 });
  const store = new Store({ table, endpoint: server.endpoint, region: 'local' });
  await store.ensureTable();
  return {
    store,
    endpoint: server.endpoint,
    close: async () => {
      store.close();
      await server.close();
    },
  };
}
