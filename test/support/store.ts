/** An embedded dynalite per test file, with the table created. */

import { startStoreServer } from '../../local/store-server.js';
import { Store } from '../../server/store/index.js';

/** Starts dynalite on a free port and returns a Store on a fresh table. */
export async function embeddedStore(table = 'rendezvous-test') {
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
