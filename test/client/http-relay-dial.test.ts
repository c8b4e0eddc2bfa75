/**
 * The HTTP-specific protocol's dial to an `https://` relay goes through the same TLS path as the
 * generic protocol's (client/relay-conn.ts): bounded handshake, no SNI for an IP literal.
 * Regression: the HTTPS dial had no handshake timeout, so a relay that accepted TCP and never
 * answered the TLS handshake held the park forever (no retry, no error, no `reconnecting`).
 */
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentEvent } from '../../client/agent-report.js';
import { createHiddenServer, type HiddenServer } from '../../client/hidden-server.js';

const SECRET = 'JBSWY3DPEHPK3PXP';

let server: HiddenServer | undefined;
let mute: Server | undefined;
const sockets = new Set<Socket>();

afterEach(async () => {
  server?.close();
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => (mute ? mute.close(() => r()) : r()));
});

describe('HTTPS dial of the http protocol', () => {
  it('an HTTPS relay that never answers the TLS handshake: the dial times out and the agent retries', async () => {
    let accepted = 0;
    mute = createServer((s) => {
      accepted++;
      sockets.add(s); // accepts TCP, reads the ClientHello, never answers
    });
    await new Promise<void>((r) => mute?.listen(0, '127.0.0.1', r));
    const port = (mute.address() as AddressInfo).port;
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      server = createHiddenServer({
        protocol: 'http',
        relay: `https://127.0.0.1:${port}`,
        uuid: 'never-answers',
        secret: SECRET,
        backoff: { minMs: 10, maxMs: 20 },
      });
      const failed = new Promise<AgentEvent>((resolve) =>
        server?.on('report', (e: AgentEvent) => {
          if (e.event === 'error') resolve(e);
        }),
      );
      const reconnecting = new Promise<number>((resolve) => server?.once('reconnecting', resolve));
      server.start();
      const e = await failed;
      expect(e).toMatchObject({ event: 'error', fatal: false });
      expect((e as { reason: string }).reason).toMatch(/TLS handshake timeout 127\.0\.0\.1:/);
      expect(await reconnecting).toBeGreaterThan(0);
      await expect.poll(() => accepted, { timeout: 5_000 }).toBeGreaterThanOrEqual(2);
      // An IP literal is not sent as SNI (RFC 6066), so Node raises no DEP0123 warning.
      expect(warnings.filter((w) => (w as { code?: string }).code === 'DEP0123')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  }, 25_000);
});
