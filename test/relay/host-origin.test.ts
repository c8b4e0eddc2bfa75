/** Host routing's cookie rule as byte vectors (relay/host-origin.ts; issue 26 item 2). */
import { describe, expect, it } from 'vitest';
import { parseRequestHead } from '../../core/http-head.js';
import { cookieForHost, headForHost, inDomain, requestHost } from '../../relay/host-origin.js';
import { relayLimitsFromEnv } from '../../relay/main.js';

const HOST = 'alice.relay.example.com';

describe('cookieForHost', () => {
  it.each([
    ['a=1', 'a=1'],
    ['a=1; Path=/; HttpOnly', 'a=1; Path=/; HttpOnly'],
    [`a=1; Domain=${HOST}; Secure`, 'a=1; Secure'],
    [`a=1; domain = .ALICE.relay.example.com`, 'a=1'],
    ['a=1; Domain=; Path=/', 'a=1; Path=/'],
    ['a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT', 'a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT'],
  ])('%s → %s', (value, kept) => {
    expect(cookieForHost(value, HOST)).toBe(kept);
  });

  it.each([
    'a=1; Domain=relay.example.com',
    'a=1; Domain=.relay.example.com; Path=/',
    'a=1; Domain=bob.relay.example.com',
    `a=1; Domain=${HOST}; Domain=relay.example.com`,
    `a=1; Domain=${HOST}.`,
    'a=1; Domain=example.com',
  ])('%s is dropped', (value) => {
    expect(cookieForHost(value, HOST)).toBeUndefined();
  });
});

describe('headForHost', () => {
  it('rewrites every Set-Cookie line, however its name is written, and keeps the rest', () => {
    const lines = [
      'HTTP/1.1 200 OK',
      'Content-Type: text/html',
      'set-cookie: a=1; Domain=relay.example.com',
      'Set-Cookie : b=2; Domain=alice.relay.example.com',
      'SET-COOKIE:c=3',
    ];
    expect(headForHost(lines, HOST)).toEqual([
      'HTTP/1.1 200 OK',
      'Content-Type: text/html',
      'Set-Cookie: b=2',
      'Set-Cookie: c=3',
    ]);
  });

  it('refuses a head with a line break that is not CRLF (a browser would split there)', () => {
    expect(
      headForHost(['HTTP/1.1 200 OK', 'X: 1\nSet-Cookie: a=1; Domain=relay.example.com'], HOST),
    ).toBeUndefined();
    expect(headForHost(['HTTP/1.1 200 OK', 'X: 1\rSet-Cookie: a=1'], HOST)).toBeUndefined();
  });
});

describe('requestHost and inDomain', () => {
  const head = (host: string) => parseRequestHead(`GET / HTTP/1.1\r\nHost: ${host}`);
  it('reads the host name without port or trailing dot, lowercased', () => {
    expect(requestHost(head('Alice.Relay.Example.com:8443'))).toBe(HOST);
    expect(requestHost(head('relay.example.com.'))).toBe('relay.example.com');
    expect(requestHost(head('[::1]:80'))).toBe('[::1]');
    expect(requestHost(parseRequestHead('GET / HTTP/1.0'))).toBe('');
  });
  it('knows the domain and the names under it, nothing else', () => {
    expect(inDomain('relay.example.com', 'relay.example.com')).toBe(true);
    expect(inDomain('a.b.relay.example.com', 'relay.example.com')).toBe(true);
    expect(inDomain('evilrelay.example.com', 'relay.example.com')).toBe(false);
    expect(inDomain('127.0.0.1', 'relay.example.com')).toBe(false);
  });
});

describe('settings from the environment', () => {
  it('RELAY_HTTP_SHARED_ORIGIN is a switch (off by default); RELAY_MAX_SPLICES_PER_SOURCE a number (16)', () => {
    expect(relayLimitsFromEnv({})).toMatchObject({ httpSharedOrigin: false, maxSplicesPerSource: 16 });
    expect(
      relayLimitsFromEnv({ RELAY_HTTP_SHARED_ORIGIN: 'on', RELAY_MAX_SPLICES_PER_SOURCE: '4' }),
    ).toMatchObject({ httpSharedOrigin: true, maxSplicesPerSource: 4 });
    expect(relayLimitsFromEnv({ RELAY_HTTP_SHARED_ORIGIN: 'off' }).httpSharedOrigin).toBe(false);
    expect(() => relayLimitsFromEnv({ RELAY_HTTP_SHARED_ORIGIN: 'yes please' })).toThrow(/on or off/);
  });
});
