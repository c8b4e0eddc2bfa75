/**
 * The local API adapter (what `npm start` serves on :8080) against malformed requests, sent raw
 * to a real `rendezvous dev` process: every one gets an HTTP answer and the stack keeps serving.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeForStep, timeStep } from '../../core/totp.js';
import { provisionIdentity } from '../../server/identities.js';
import { type DevProcess, startDevProcess, storeOf } from '../support/dev-process.js';
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

describe('any request path reaches the handlers, as on the original (issue 25)', () => {
  it('PUT /registrar/x?uuid=…&response=… registers like /, GET /any/path looks up like /', async () => {
    const store = storeOf(dev);
    try {
      const id = await provisionIdentity(store, { uuid: 'any-path' });
      const code = codeForStep(id, timeStep(id, Date.now()));
      const put = await fetch(`${dev.apiUrl}/registrar/x?uuid=any-path&response=${code}`, { method: 'PUT' });
      expect(put.status).toBe(200);
      const body = (await put.json()) as { result: { cookie: string } };
      expect(body.result.cookie).toMatch(/^R/);
      const get = await fetch(`${dev.apiUrl}/some/where/else?uuid=any-path`);
      expect(get.status).toBe(200);
      expect(((await get.json()) as { result: { cookie: string } }).result.cookie).toMatch(/^I/);
      // A path with no uuid is the handlers' own answer, not a routing 404.
      const none = await fetch(`${dev.apiUrl}/registrar/x`);
      expect(((await none.json()) as { error: { diagnostic: string } }).error.diagnostic).toContain('uuid');
    } finally {
      store.close();
    }
  });
});

describe('request bodies over the limit (issue 26 item 1)', () => {
  it('a 70 KB PUT body gets 413, and the stack keeps serving afterwards', async () => {
    const body = 'x'.repeat(70_000);
    const res = await fetch(`${dev.apiUrl}/?uuid=big-body&response=123456`, { method: 'PUT', body }).catch(
      (err: Error) => err,
    );
    // The answer may race the upload: either the 413 is read, or the socket ends mid-upload.
    if (!(res instanceof Error)) expect(res.status).toBe(413);
    const raw = await rawExchange(
      apiPort(),
      `PUT /?uuid=big-body&response=123456 HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n${body}`,
      5_000,
    );
    expect(raw.text).toMatch(/^HTTP\/1\.1 413 /);
    // Give a crashing process the moment it needs, then ask again: it still answers.
    for (let i = 0; i < 3; i++) {
      const again = await fetch(`${dev.apiUrl}/?uuid=nobody-here`);
      expect(again.status).toBe(404);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(dev.child.exitCode).toBeNull();
    expect(dev.output()).not.toContain('TypeError');
  });
});
