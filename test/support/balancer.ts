/**
 * A round-robin TCP load balancer on 127.0.0.1, standing in for the NLB: each accepted
 * connection goes to the next target that accepts, and is spliced to it (half-close kept).
 */

import type { AddressInfo } from 'node:net';
import { connect, createServer, type Socket } from 'node:net';
import { splice } from '../../core/splice.js';

/** Starts a balancer over `targets` (ports on 127.0.0.1; the list may be changed later). */
export async function startBalancer(targets: number[]) {
  let next = 0;
  const sockets = new Set<Socket>();
  const dialAny = (tries: number): Promise<Socket> =>
    new Promise((resolve, reject) => {
      if (tries <= 0 || targets.length === 0) return reject(new Error('no target'));
      const port = targets[next++ % targets.length] as number;
      const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
      s.once('connect', () => resolve(s));
      s.once('error', () => dialAny(tries - 1).then(resolve, reject));
    });
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    dialAny(targets.length).then(
      (upstream) => {
        sockets.add(upstream);
        upstream.on('close', () => sockets.delete(upstream));
        splice(client, upstream);
      },
      () => client.destroy(),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    targets,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
