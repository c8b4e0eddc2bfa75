/**
 * Property-based fuzzing (fast-check) of every parser that faces the network: the relay line
 * codec, the HTTP head parser, the CONNECT target and mobile-name parsers, the peer line, and the
 * API's query parameters. Arbitrary input never throws anything but our typed errors; valid
 * input round-trips; invalid input is rejected.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RendezvousError } from '../../core/errors.js';
import {
  HeadDecoder,
  HttpError,
  namedHiddenServer,
  parseConnectTarget,
  parseRequestHead,
  RequestBodyFramer,
  serializeHead,
} from '../../core/http-head.js';
import {
  encodeCookieLine,
  encodeErrorLine,
  LineDecoder,
  MAX_COOKIE_LINE,
  parseCookieLine,
} from '../../core/relay-line.js';
import { queryParam } from '../../functions/http.js';
import { encodePeerLine, verifyPeerLine } from '../../relay/peer-line.js';
import { checkUuid } from '../../server/identities.js';
import { checkResponse } from '../../server/register.js';

const ours = (err: unknown) => err instanceof RendezvousError;
const bytes = fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a));
/** Splits a buffer into arbitrary chunks, as TCP may deliver it. */
const chunked = bytes.chain((b) =>
  fc.array(fc.nat({ max: Math.max(0, b.length) }), { maxLength: 6 }).map((cuts) => {
    const points = [...new Set(cuts)].sort((x, y) => x - y);
    const out: Buffer[] = [];
    let at = 0;
    for (const p of points) {
      out.push(b.subarray(at, p));
      at = p;
    }
    out.push(b.subarray(at));
    return { whole: b, chunks: out };
  }),
);
const cookieBody = fc.stringMatching(/^[A-Za-z0-9_-]{1,120}$/);
const token = fc.stringMatching(/^[A-Za-z0-9-]{1,20}$/);

describe('relay line codec', () => {
  it('arbitrary bytes in arbitrary chunks: a line, a typed error, or more wanted — nothing else', () => {
    fc.assert(
      fc.property(chunked, ({ whole, chunks }) => {
        const d = new LineDecoder(MAX_COOKIE_LINE);
        try {
          for (const c of chunks) {
            const got = d.push(c);
            if (got) {
              const nl = whole.indexOf(0x0a);
              const expected = whole.subarray(0, nl).toString('latin1').replace(/\r$/, '');
              expect(got.line).toBe(expected);
              try {
                parseCookieLine(got.line);
              } catch (err) {
                expect(ours(err)).toBe(true);
              }
              return;
            }
          }
          expect(whole.length).toBeLessThan(MAX_COOKIE_LINE);
        } catch (err) {
          expect(ours(err)).toBe(true);
        }
      }),
      { numRuns: 2_000 },
    );
  });

  it('valid cookie lines round-trip; invalid prefixes are rejected', () => {
    fc.assert(
      fc.property(fc.constantFrom('R', 'I'), cookieBody, (prefix, c) => {
        const line = new LineDecoder(MAX_COOKIE_LINE).push(encodeCookieLine(`${prefix}${c}`));
        expect(parseCookieLine(line?.line as string)).toEqual({
          role: prefix === 'R' ? 'hidden' : 'mobile',
          cookie: c,
        });
      }),
    );
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 1 }).filter((p) => p !== 'R' && p !== 'I'),
        cookieBody,
        (p, c) => {
          expect(() => parseCookieLine(`${p}${c}`)).toThrow(RendezvousError);
        },
      ),
    );
  });

  it('error lines are always one printable line', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 1000 }), (text) => {
        const line = encodeErrorLine(text).toString('latin1');
        expect(/^-ERR [ -~]*\n$/.test(line)).toBe(true);
        expect(line.length).toBeLessThanOrEqual(512);
      }),
    );
  });
});

describe('HTTP head parser', () => {
  it('arbitrary bytes in arbitrary chunks: a head or an HttpError, nothing else', () => {
    fc.assert(
      fc.property(chunked, ({ chunks }) => {
        const d = new HeadDecoder(256);
        try {
          for (const c of chunks) {
            const got = d.push(c);
            if (got) {
              parseRequestHead(got.text);
              return;
            }
          }
        } catch (err) {
          expect(err).toBeInstanceOf(HttpError);
        }
      }),
      { numRuns: 2_000 },
    );
  });

  it('valid heads round-trip through serializeHead', () => {
    const head = fc.record({
      method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS'),
      target: fc.stringMatching(/^\/[A-Za-z0-9/?=&%._~-]{0,60}$/),
      version: fc.constantFrom('HTTP/1.1', 'HTTP/1.0'),
      headers: fc.array(fc.tuple(token, fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,40}[\x21-\x7e])?$/)), {
        maxLength: 8,
      }),
    });
    fc.assert(
      fc.property(head, (h) => {
        const headers = h.headers.filter(([k]) => !/^(content-length|transfer-encoding)$/i.test(k)) as Array<
          [string, string]
        >;
        const wire = serializeHead({ ...h, headers });
        const got = new HeadDecoder().push(wire);
        expect(got).not.toBeNull();
        expect(parseRequestHead(got?.text as string)).toEqual({ ...h, headers });
      }),
    );
  });

  it('invalid heads are rejected: bad field names, folding, smuggling framings', () => {
    fc.assert(
      fc.property(
        token,
        fc.constantFrom(
          'bad name: x',
          ' folded',
          'Content-Length: 1\r\nTransfer-Encoding: chunked',
          `X${String.fromCharCode(0)}: y`,
        ),
        (k, bad) => {
          expect(() => parseRequestHead(`GET / HTTP/1.1\r\n${k}: ok\r\n${bad}`)).toThrow(HttpError);
        },
      ),
    );
  });

  it('CONNECT targets and mobile names: a value or a typed error for any string', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (target) => {
        try {
          const t = parseConnectTarget(target);
          expect(target.startsWith('uuid:')).toBe(true);
          expect(t.response ?? t.cookie).toBeTruthy();
        } catch (err) {
          expect(err).toBeInstanceOf(HttpError);
        }
        expect(() =>
          namedHiddenServer(
            {
              method: 'GET',
              target,
              version: 'HTTP/1.1',
              headers: [
                ['Authorization', target],
                ['Host', target],
              ],
            },
            'relay.example.com',
          ),
        ).not.toThrow();
      }),
      { numRuns: 2_000 },
    );
  });
});

describe('request body framing (one request per connection)', () => {
  /** Feeds `wire` in the given pieces; returns how many bytes the framer took as body. */
  const frame = (head: string, wire: Buffer, cuts: number[]) => {
    const f = new RequestBodyFramer(parseRequestHead(head));
    let taken = 0;
    let at = 0;
    for (const p of [...new Set(cuts.map((c) => c % (wire.length + 1)))]
      .sort((x, y) => x - y)
      .concat(wire.length)) {
      const piece = wire.subarray(at, p);
      at = p;
      if (f.done) continue;
      const n = f.push(piece);
      expect(n).toBeLessThanOrEqual(piece.length);
      taken += n;
      if (n < piece.length) expect(f.done).toBe(true);
    }
    return { taken, done: f.done };
  };
  const after = fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a));
  const cuts = fc.array(fc.nat(), { maxLength: 8 });

  it('a chunked body ends exactly where its last chunk and trailers end, however it is split', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 50 }), { maxLength: 5 }),
        fc.array(fc.tuple(token, fc.stringMatching(/^[a-z0-9]{0,10}$/)), { maxLength: 2 }),
        fc.boolean(),
        after,
        cuts,
        (pieces, trailers, ext, rest, at) => {
          const body = Buffer.concat([
            ...pieces.map((p) =>
              Buffer.concat([
                Buffer.from(`${p.length.toString(16)}${ext ? ';x=y' : ''}\r\n`),
                Buffer.from(p),
                Buffer.from('\r\n'),
              ]),
            ),
            Buffer.from(`0\r\n${trailers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`),
          ]);
          const got = frame('POST / HTTP/1.1\r\nTransfer-Encoding: chunked', Buffer.concat([body, rest]), at);
          expect(got).toEqual({ taken: body.length, done: true });
        },
      ),
    );
  });

  it('Content-Length frames exactly that many bytes; no framing means no body', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), after, cuts, (b, rest, at) => {
        const wire = Buffer.concat([Buffer.from(b), rest]);
        expect(frame(`POST / HTTP/1.1\r\nContent-Length: ${b.length}`, wire, at)).toEqual({
          taken: b.length,
          done: true,
        });
        expect(frame('GET / HTTP/1.1', rest, at)).toEqual({ taken: 0, done: true });
      }),
    );
  });
});

describe('peer line', () => {
  it('arbitrary lines are refused with a typed error; signed lines verify; one flipped byte does not', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (line) => {
        expect(() => verifyPeerLine('secret', line)).toThrow(RendezvousError);
      }),
    );
    fc.assert(
      fc.property(
        cookieBody.filter((c) => c.length <= 128),
        fc.nat({ max: 10_000 }),
        fc.nat(),
        (key, wait, flip) => {
          const line = encodePeerLine('secret', { kind: 'generic', key, waitMs: wait })
            .toString('latin1')
            .trimEnd();
          expect(verifyPeerLine('secret', line)).toEqual({ kind: 'generic', key, waitMs: wait });
          const i = flip % line.length;
          const mutated = `${line.slice(0, i)}${line[i] === 'A' ? 'B' : 'A'}${line.slice(i + 1)}`;
          expect(() => verifyPeerLine('secret', mutated)).toThrow(RendezvousError);
          expect(() => verifyPeerLine('other secret', line)).toThrow(RendezvousError);
        },
      ),
    );
  });
});

describe('API query parameters', () => {
  const event = (value: string) =>
    ({ queryStringParameters: { uuid: value, response: value } }) as unknown as Parameters<
      typeof queryParam
    >[0];

  it('any value: accepted as is, or a typed BAD_REQUEST', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 2_000 }), (value) => {
        for (const [name, check] of [
          ['uuid', checkUuid],
          ['response', checkResponse],
        ] as const) {
          try {
            expect(check(queryParam(event(value), name))).toBe(value);
          } catch (err) {
            expect(err).toBeInstanceOf(RendezvousError);
            expect((err as RendezvousError).code).toBe('BAD_REQUEST');
          }
        }
      }),
      { numRuns: 3_000 },
    );
  });

  it('valid uuids and codes round-trip', () => {
    fc.assert(
      fc.property(
        fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/),
        fc.stringMatching(/^[0-9]{6,10}$/),
        (uuid, code) => {
          expect(checkUuid(queryParam(event(uuid), 'uuid'))).toBe(uuid);
          expect(checkResponse(queryParam(event(code), 'response'))).toBe(code);
        },
      ),
    );
  });
});
