/**
 * The relay's health port: `GET /healthz` (200 while serving, 503 once draining; the load
 * balancer's check) and `GET /metrics` (Prometheus text, for anyone running relays outside AWS).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Metrics } from '../server/metrics/registry.js';
import { listen } from './listen.js';

/** What `/healthz` reports, read at each request. */
export interface HealthState {
  draining: boolean;
  relayId: string;
  /** Parked sockets. */
  parked: number;
  /** Live splices. */
  splices: number;
}

/** Where the health port listens and what it reads. */
export interface HealthOptions {
  port: number;
  host: string;
  metrics: Metrics;
  /** More Prometheus text after the registry's (the meter's top identities: prom only, never EMF). */
  extraMetrics?: () => string;
  state: () => HealthState;
  /** Errors of the listener once it listens. */
  onError: (err: NodeJS.ErrnoException) => void;
}

/** A listening health port. */
export interface HealthServer {
  address: AddressInfo;
  /** Stops listening and ends open connections. */
  close(): Promise<void>;
}

/** Starts the health port; resolves once it listens. */
export async function startHealthServer(opts: HealthOptions): Promise<HealthServer> {
  const health = createServer((req, res) => {
    if (req.url === '/metrics') {
      // Prometheus text exposition, for anyone running relays outside AWS.
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4', connection: 'close' });
      res.end(opts.metrics.prometheus() + (opts.extraMetrics?.() ?? ''));
      return;
    }
    const ok = req.url === '/healthz' || req.url?.startsWith('/healthz?');
    // The bench's "what a parked socket holds" figure: under --expose-gc (never in production),
    // `/healthz?gc` collects garbage first, so RSS shows live memory, not GC timing.
    const gc = (globalThis as { gc?: () => void }).gc;
    if (ok && req.url === '/healthz?gc' && gc) gc();
    const s = opts.state();
    const status = !ok ? 404 : s.draining ? 503 : 200;
    res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
    res.end(
      // pid: the bench reads this process's RSS (behind `rendezvous relay` it is the launcher's child).
      JSON.stringify(
        ok
          ? { ok: !s.draining, relayId: s.relayId, parked: s.parked, splices: s.splices, pid: process.pid }
          : { error: 'not found' },
      ),
    );
  });
  const address = await listen(health, opts.port, opts.host);
  health.on('error', opts.onError);
  return {
    address,
    close: () =>
      new Promise((r) => {
        health.close(() => r());
        health.closeAllConnections();
      }),
  };
}
