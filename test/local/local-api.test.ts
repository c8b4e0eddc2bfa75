/**
 * The local API adapter (what `npm start` serves on :8080) against malformed requests, sent raw
 * to a real `rendezvous dev` process: every one gets an HTTP answer and the stack keeps serving.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DevProcess, startDevProcess } from '../support/dev-process.js';
import { rawExchange } from '../support/net.js';

let dev: DevProcess;

beforeAll(async () => {
  dev = await startDevProcess();
});
afterAll(async () => {
  await dev?.stop();
});

const apiPort = () => Number(new URL(dev.apiUrl).port);

describe('malformed requests on the local API adapter (issue 12 item 8)', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['GET // (scheme-relative target)', 'GET // HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET //x?uuid=a', 'GET //x?uuid=a HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    [
      'bad percent-encoding in the query',
      'GET /?uuid=%zz%E0%A4%A HTTP/1.1\r\nHost: x\r\n\r\n',
      /^HTTP\/1\.1 400 /,
    ],
    ['bad percent-encoding in the path', 'GET /%%30 HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['an absolute-form target', 'GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['a 64 KiB path', `GET /${'a'.repeat(65_536)} HTTP/1.1\r\nHost: x\r\n\r\n`, /^HTTP\/1\.1 4(00|14|31) /],
    ['raw garbage', '\x00\x01\x02garbage\r\n\r\n', /^HTTP\/1\.1 400 /],
  ];
  for (const [name, payload, expected] of cases) {
    it(`${name}: an HTTP error answer, and the stack still serves`, async () => {
      const out = await rawExchange(apiPort(), payload, 5_000);
      expect(out.text).toMatch(expected);
      expect(dev.child.exitCode).toBeNull();
      const res = await fetch(`${dev.apiUrl}/?uuid=nobody-here`);
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({
        error: { permanent: false, diagnostic: 'hidden server not registered' },
      });
    });
  }
});
