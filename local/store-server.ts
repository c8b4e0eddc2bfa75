/** The embedded DynamoDB-compatible store (dynalite), in memory or on disk. */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import dynalite from 'dynalite';

/** How long a close waits for requests already being served before it closes the database. */
export const STORE_CLOSE_GRACE_MS = 2_000;

/** What a request that reaches the store while it closes is told (a retryable DynamoDB error). */
const CLOSING_BODY = JSON.stringify({
  __type: 'com.amazonaws.dynamodb.v20120810#ServiceUnavailableException',
  message: 'the embedded store is closing',
});

/** Starts dynalite on 127.0.0.1; `path` keeps data on disk, otherwise in memory. */
export async function startStoreServer(opts: { port: number; path?: string }): Promise<{
  endpoint: string;
  close: () => Promise<void>;
}> {
  // createTableMs: 0 makes tables ACTIVE at once, as a developer expects of a local store.
  const server: Server = dynalite({ path: opts.path, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  // dynalite throws "Database is closed" out of the process when a write reaches its database
  // after close (a parked relay's refresh, a late registration). So requests pass through a gate:
  // once closing, new ones get a retryable 503, and the database closes after those in flight.
  const handlers = server.listeners('request') as Array<(req: IncomingMessage, res: ServerResponse) => void>;
  server.removeAllListeners('request');
  let closing = false;
  let inFlight = 0;
  let drained: (() => void) | undefined;
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (closing) {
      req.resume();
      res.writeHead(503, { 'content-type': 'application/x-amz-json-1.0', connection: 'close' });
      res.end(CLOSING_BODY);
      return;
    }
    inFlight++;
    res.once('close', () => {
      if (--inFlight === 0) drained?.();
    });
    for (const handle of handlers) handle.call(server, req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: async () => {
      closing = true;
      if (inFlight > 0)
        await new Promise<void>((resolve) => {
          drained = resolve;
          setTimeout(resolve, STORE_CLOSE_GRACE_MS).unref();
        });
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        (server as Server & { closeAllConnections?: () => void }).closeAllConnections?.();
      });
    },
  };
}
