/** The embedded DynamoDB-compatible store (dynalite), in memory or on disk. */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import dynalite from 'dynalite';

/** Starts dynalite on 127.0.0.1; `path` keeps data on disk, otherwise in memory. */
export async function startStoreServer(opts: { port: number; path?: string }): Promise<{
  endpoint: string;
  close: () => Promise<void>;
}> {
  // createTableMs: 0 makes tables ACTIVE at once, as a developer expects of a local store.
  const server: Server = dynalite({ path: opts.path, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        (server as Server & { closeAllConnections?: () => void }).closeAllConnections?.();
      }),
  };
}
