/** Starting a listener and waiting until it listens (or fails to); the address clients reach it at. */
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo, Server } from 'node:net';
import type { Log } from '../core/log.js';
import { DIRECT_ADDRESS } from '../core/relay-line.js';

/** Listens on `host:port`; resolves to the address bound, rejects on the first error. */
export function listen(server: Server | HttpServer, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** `host:port` for park records and `+OK direct=` (IPv6 in brackets); none when `+OK` cannot carry it. */
export function directAddress(host: string, port: number, log: Log): string | undefined {
  const direct = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  if (DIRECT_ADDRESS.test(direct)) return direct;
  log.warn('no direct address: not a host:port the protocol can carry', { direct: direct.slice(0, 80) });
}
