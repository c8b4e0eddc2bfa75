/**
 * A client pointed at something that is not a rendezvous registration API (or not a relay) says
 * so in one line naming what answered, and stops, instead of retrying forever with `HTTP 404`
 * or printing the other service's own words: the store's port, the relay's HTTP port, a wrong
 * path on the API, an HTML page such as the console; for the HTTP protocol, the relay's
 * generic port and the API.
 */
import { createServer, type Server } from 'node:http';
import { type AddressInfo, createServer as createNetServer, type Server as NetServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, isRendezvousError } from '../../index.js';
import type { LocalStack } from '../../local/stack.js';
import { exitWithin, spawnCli } from '../support/cli.js';
import { provision, startStack } from '../support/stack.js';

let stack: LocalStack;
let page: Server;
/** A web server that answers every request, CONNECT included, with a 404 page (as nginx does). */
let web404: NetServer;
/** API Gateway with no route for the request (a deployment older than the any-path routes). */
let gateway: Server;
let secret: string;
beforeAll(async () => {
  gateway = createServer((_req, res) => {
    res.writeHead(404, { 'content-type': 'application/json', 'x-amzn-requestid': 'f00' });
    res.end('{"message":"Not Found"}');
  });
  await new Promise<void>((r) => gateway.listen(0, '127.0.0.1', r));
  stack = await startStack();
  secret = (await provision(stack, { uuid: 'endpoint-id' })).secret;
  page = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><html><head><title>rendezvous console</title></head><body>hi</body></html>');
  });
  await new Promise<void>((r) => page.listen(0, '127.0.0.1', r));
  web404 = createNetServer((s) => {
    s.on('error', () => undefined);
    s.once('data', () =>
      s.end(
        'HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 61\r\nConnection: close\r\n\r\n<html><head><title>404 Not Found</title></head><body></body>',
      ),
    );
  });
  await new Promise<void>((r) => web404.listen(0, '127.0.0.1', r));
});
afterAll(async () => {
  page?.close();
  gateway?.close();
  web404?.close();
  await stack?.close();
});

const pageUrl = () => `http://127.0.0.1:${(page.address() as AddressInfo).port}`;

/** Runs the CLI; its exit code and stderr's lines. */
async function run(args: string[]): Promise<{ code: number | null; lines: string[] }> {
  const child = spawnCli(args, { RENDEZVOUS_SECRET: secret });
  let err = '';
  child.stderr?.on('data', (c) => {
    err += c;
  });
  const code = await exitWithin(child, 30_000);
  return {
    code,
    lines: err.split('\n').filter((l) => l.trim() && !/NodeVersionSupport|node >=22|a\.co\//.test(l)),
  };
}

const wrongApis: Array<[string, () => string, RegExp]> = [
  ['the store (DynamoDB) port', () => stack.storeEndpoint, /DynamoDB/],
  ["the relay's HTTP port", () => `http://127.0.0.1:${stack.httpPort}`, /relay's HTTP-specific port/],
  // Any path reaches our API's handlers (as on the original), so a wrong path shows up only as
  // API Gateway answering for a route it does not have.
  [
    'API Gateway without the route',
    () => `http://127.0.0.1:${(gateway.address() as AddressInfo).port}/prod`,
    /API Gateway endpoint without this route.*check the path/,
  ],
  ['an HTML page (the console)', pageUrl, /HTML page.*rendezvous console/],
];

describe('--api pointed at something else', () => {
  for (const [what, url, names] of wrongApis) {
    it(`expose: ${what} — one line naming it, exit 1`, async () => {
      const { code, lines } = await run([
        'expose',
        '--uuid',
        'endpoint-id',
        '--to',
        '1',
        '--api',
        url(),
        '--probe-every',
        '0',
      ]);
      expect(code).toBe(1);
      const last = lines.at(-1) ?? '';
      expect(last).toMatch(/not a rendezvous registration API/);
      expect(last).toMatch(names);
    });

    it(`connect: ${what} — one line naming it, exit 1`, async () => {
      const { code, lines } = await run(['connect', '--uuid', 'endpoint-id', '--api', url()]);
      expect(code).toBe(1);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/not a rendezvous registration API/);
      expect(lines[0]).toMatch(names);
    });
  }

  it('the library: connect() rejects with a PROTOCOL error naming what answered', async () => {
    await expect(connect({ api: stack.storeEndpoint, uuid: 'endpoint-id' })).rejects.toSatisfy(
      (e) => isRendezvousError(e, 'PROTOCOL') && /DynamoDB/.test((e as Error).message),
    );
  });
});

describe('--relay pointed at something else (HTTP protocol)', () => {
  it("the relay's generic port: one line naming it, exit 1", async () => {
    const { code, lines } = await run([
      'expose',
      '--protocol',
      'http',
      '--relay',
      `http://127.0.0.1:${stack.relayPort}`,
      '--uuid',
      'endpoint-id',
      '--to',
      '1',
      '--probe-every',
      '0',
    ]);
    expect(code).toBe(1);
    expect(lines.at(-1)).toMatch(/not a rendezvous HTTP relay.*generic/);
  });

  it('a web server answering 404 pages: one line naming it, exit 1', async () => {
    const { code, lines } = await run([
      'expose',
      '--protocol',
      'http',
      '--relay',
      `http://127.0.0.1:${(web404.address() as AddressInfo).port}`,
      '--uuid',
      'endpoint-id',
      '--to',
      '1',
      '--probe-every',
      '0',
    ]);
    expect(code).toBe(1);
    expect(lines.at(-1)).toMatch(/not a rendezvous HTTP relay.*HTML page titled "404 Not Found"/);
  });
});
