/** A proxy in front of the store that counts requests by DynamoDB operation (tests and the bench). */
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';

/** An HTTP proxy in front of the store that counts requests by DynamoDB operation. */
export async function countingStoreProxy(target: string): Promise<{
  endpoint: string;
  counts: Map<string, number>;
  close: () => void;
}> {
  const counts = new Map<string, number>();
  const to = new URL(target);
  const server = createHttpServer((req, res) => {
    const op = String(req.headers['x-amz-target'] ?? '?')
      .split('.')
      .pop() as string;
    counts.set(op, (counts.get(op) ?? 0) + 1);
    const up = httpRequest(
      { host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    counts,
    close: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}
