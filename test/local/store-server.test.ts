/**
 * The embedded store closes cleanly under writes: a write that reaches it while it closes gets an
 * error answer, never an exception out of the process (dynalite threw "Database is closed" from a
 * write that arrived after its database had closed, which killed the test worker in CI under load).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startStoreServer } from '../../local/store-server.js';
import { Store } from '../../server/store/index.js';

const uncaught: unknown[] = [];
const onUncaught = (err: unknown) => uncaught.push(err);

afterEach(() => {
  process.off('uncaughtException', onUncaught);
});

describe('the embedded store server', () => {
  it('closing while writes are in flight fails those writes, and nothing escapes the process', async () => {
    process.on('uncaughtException', onUncaught);
    for (let round = 0; round < 5; round++) {
      const server = await startStoreServer({ port: 0 });
      const store = new Store({ table: 'closing', endpoint: server.endpoint, region: 'local' });
      await store.ensureTable();
      const writes: Array<Promise<unknown>> = [];
      let stop = false;
      // A steady stream of writes from several callers, as parked relays refresh their records.
      for (let w = 0; w < 8; w++)
        writes.push(
          (async () => {
            for (let k = 0; !stop; k++) await store.noteChange(`u${w}-${k}`).catch(() => undefined);
          })(),
        );
      await new Promise((r) => setTimeout(r, 50 + round * 20));
      await server.close();
      stop = true;
      await Promise.all(writes);
      store.close();
    }
    // Exceptions from the store's own callbacks surface on the next turns of the loop.
    await new Promise((r) => setTimeout(r, 200));
    expect(uncaught.map(String)).toEqual([]);
  });
});
