/** RELAY_PEER_HOST discovery, with a real HTTP server standing in for the ECS task metadata endpoint. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { discoverPeerHost } from '../../relay/main.js';

describe('discoverPeerHost', () => {
  it('prefers RELAY_PEER_HOST', async () => {
    expect(await discoverPeerHost({ RELAY_PEER_HOST: '10.1.2.3' }, '0.0.0.0')).toBe('10.1.2.3');
  });

  it('reads the task private IPv4 from the ECS task metadata endpoint (v4)', async () => {
    const server = createServer((req, res) => {
      expect(req.url).toBe('/v4/abc/task');
      res.end(
        JSON.stringify({
          Containers: [{ Networks: [{ NetworkMode: 'awsvpc', IPv4Addresses: ['10.0.1.23'] }] }],
        }),
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const uri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v4/abc`;
      expect(await discoverPeerHost({ ECS_CONTAINER_METADATA_URI_V4: uri }, '0.0.0.0')).toBe('10.0.1.23');
    } finally {
      server.close();
    }
  });

  it('falls back to a specific bind address, else loopback', async () => {
    expect(await discoverPeerHost({}, '192.0.2.7')).toBe('192.0.2.7');
    expect(await discoverPeerHost({}, '0.0.0.0')).toBe('127.0.0.1');
  });
});
