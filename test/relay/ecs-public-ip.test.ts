/**
 * RELAY_DIRECT_HOST=ecs-public-ip: the relay finds its task's public IPv4 through the task
 * metadata endpoint (private address), the container credentials endpoint (the task role) and
 * EC2's DescribeNetworkInterfaces, here three local stand-ins; the request's SigV4 signature is
 * the one the AWS SDK's signer computes for the same request.
 */
import { createHash, createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignatureV4 } from '@smithy/signature-v4';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ecsPublicIp, signGet } from '../../relay/ecs-public-ip.js';

const CREDS = {
  AccessKeyId: 'AKIDEXAMPLE',
  SecretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
  Token: 'tok/en+=',
};
let server: Server;
let base: string;
const seen: IncomingMessage[] = [];
let publicIp: string | undefined = '203.0.113.25';

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push(req);
    if (req.url === '/meta/task')
      return res.end(JSON.stringify({ Containers: [{ Networks: [{ IPv4Addresses: ['10.0.3.17'] }] }] }));
    if (req.url === '/creds') return res.end(JSON.stringify(CREDS));
    if (req.url?.startsWith('/ec2/?')) {
      const q = new URL(req.url, 'http://x').searchParams;
      const ok = q.get('Action') === 'DescribeNetworkInterfaces' && q.get('Filter.1.Value.1') === '10.0.3.17';
      if (!ok || !req.headers.authorization?.startsWith('AWS4-HMAC-SHA256 ')) {
        res.statusCode = 400;
        return res.end('<Error/>');
      }
      const assoc = publicIp ? `<association><publicIp>${publicIp}</publicIp></association>` : '';
      return res.end(
        `<DescribeNetworkInterfacesResponse><networkInterfaceSet><item>${assoc}</item></networkInterfaceSet></DescribeNetworkInterfacesResponse>`,
      );
    }
    res.statusCode = 404;
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => server?.close());

const env = () => ({
  ECS_CONTAINER_METADATA_URI_V4: `${base}/meta`,
  AWS_CONTAINER_CREDENTIALS_FULL_URI: `${base}/creds`,
  AWS_ENDPOINT_URL_EC2: `${base}/ec2/`,
  AWS_REGION: 'eu-west-1',
});

const bytes = (d: string | ArrayBuffer | ArrayBufferView): string | Buffer =>
  typeof d === 'string'
    ? d
    : ArrayBuffer.isView(d)
      ? Buffer.from(d.buffer, d.byteOffset, d.byteLength)
      : Buffer.from(d);

/** SHA-256 and HMAC-SHA256 as the SDK signer wants them, from node:crypto. */
class NodeSha256 {
  private readonly h;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.h = secret ? createHmac('sha256', bytes(secret)) : createHash('sha256');
  }
  update(data: string | ArrayBuffer | ArrayBufferView) {
    this.h.update(bytes(data));
  }
  async digest() {
    return new Uint8Array(this.h.digest());
  }
  reset() {}
}

describe('ecsPublicIp', () => {
  it('reads the private address, the task credentials, then the public IPv4 from EC2', async () => {
    expect(await ecsPublicIp(env())).toBe('203.0.113.25');
    const ec2 = seen.find((r) => r.url?.startsWith('/ec2/'));
    expect(ec2?.headers['x-amz-security-token']).toBe(CREDS.Token);
  });

  it('rejects when the interface has no public address, or off ECS', async () => {
    publicIp = undefined;
    await expect(ecsPublicIp(env())).rejects.toThrow(/no public IPv4 associated with 10.0.3.17/);
    publicIp = '203.0.113.25';
    await expect(ecsPublicIp({ AWS_REGION: 'eu-west-1' })).rejects.toThrow(/not on ECS/);
  });

  it('signs as the AWS SDK signer does', async () => {
    const url = new URL('https://ec2.eu-west-1.amazonaws.com/');
    url.searchParams.set('Action', 'DescribeNetworkInterfaces');
    url.searchParams.set('Version', '2016-11-15');
    url.searchParams.set('Filter.1.Name', 'addresses.private-ip-address');
    url.searchParams.set('Filter.1.Value.1', '10.0.3.17');
    const when = new Date('2026-12-07T15:00:00Z');
    const ours = signGet(url, 'ec2', 'eu-west-1', CREDS, when);
    const signer = new SignatureV4({
      service: 'ec2',
      region: 'eu-west-1',
      sha256: NodeSha256,
      credentials: {
        accessKeyId: CREDS.AccessKeyId,
        secretAccessKey: CREDS.SecretAccessKey,
        sessionToken: CREDS.Token,
      },
    });
    const signed = await signer.sign(
      {
        method: 'GET',
        protocol: 'https:',
        hostname: url.hostname,
        path: '/',
        query: Object.fromEntries(url.searchParams),
        headers: { host: url.host },
      },
      { signingDate: when },
    );
    expect(ours.authorization).toBe(signed.headers.authorization);
  });
});
