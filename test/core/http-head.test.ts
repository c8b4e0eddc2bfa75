/**
 * The agent's side of the HTTP-specific wire format in core/http-head.ts, as literal byte
 * vectors: the parking CONNECT (exactly what the agent and the smoke check wrote by hand before
 * it had one encoder), the rid of a forwarded head, and the header names the relay shares.
 */
import { describe, expect, it } from 'vitest';
import {
  COOKIE_HEADER,
  encodeConnect,
  forwardedRid,
  parseConnectTarget,
  RID_HEADER,
  TARGET_HEADER,
} from '../../core/http-head.js';

const bytes = (text: string) => Buffer.from(text, 'latin1');

describe('encodeConnect', () => {
  it("a code, no target: the smoke check's CONNECT", () => {
    expect(encodeConnect({ uuid: 'abc', response: '123456', host: '127.0.0.1:8080' })).toEqual(
      bytes('CONNECT uuid:abc?response=123456 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n'),
    );
  });

  it("a code and the target: the agent's first park", () => {
    expect(
      encodeConnect({ uuid: 'my server', response: '00012345', host: 'relay.example', target: 'up' }),
    ).toEqual(
      bytes(
        'CONNECT uuid:my%20server?response=00012345 HTTP/1.1\r\nHost: relay.example\r\nRendezvous-Target: up\r\n\r\n',
      ),
    );
  });

  it('a cookie (percent-encoded) and a target that is down: a re-park', () => {
    expect(
      encodeConnect({ uuid: 'a/b', cookie: 'c+k=/x', host: 'relay.example:443', target: 'down' }),
    ).toEqual(
      bytes(
        'CONNECT uuid:a%2Fb?cookie=c%2Bk%3D%2Fx HTTP/1.1\r\nHost: relay.example:443\r\nRendezvous-Target: down\r\n\r\n',
      ),
    );
  });

  it('what it writes, the relay parses back', () => {
    const head = encodeConnect({ uuid: 'ü?&x', cookie: 'a b&c', host: 'h' }).toString('latin1');
    const target = head.split(' ')[1] as string;
    expect(parseConnectTarget(target)).toEqual({ uuid: 'ü?&x', cookie: 'a b&c', response: undefined });
  });
});

describe('forwardedRid', () => {
  it('finds Rendezvous-Id in any case, and nothing when it is absent or malformed', () => {
    expect(forwardedRid(bytes('GET / HTTP/1.1\r\nHost: x\r\nRendezvous-Id: AbC_-9\r\n\r\nbody'))).toBe(
      'AbC_-9',
    );
    expect(forwardedRid(bytes('GET / HTTP/1.1\r\nrendezvous-id:\tq1 \r\n'))).toBe('q1');
    expect(forwardedRid(bytes('GET / HTTP/1.1\r\nHost: x\r\n\r\nRendezvous-Id: late\r\n'))).toBeUndefined();
    expect(forwardedRid(bytes('GET / HTTP/1.1\r\nRendezvous-Id: no spaces allowed\r\n\r\n'))).toBeUndefined();
    expect(forwardedRid(bytes(''))).toBeUndefined();
  });
});

describe('header names', () => {
  it('are spelled as the relay sends and reads them', () => {
    expect([COOKIE_HEADER, RID_HEADER, TARGET_HEADER]).toEqual([
      'Rendezvous-Cookie',
      'Rendezvous-Id',
      'Rendezvous-Target',
    ]);
  });
});
