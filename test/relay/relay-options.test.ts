/**
 * Issue 17's opt-in wire options, as byte vectors: cookie-line options (`rid`, `target=`), the
 * `+OK rid=` answer, and the peer request's signed rid and asking relay. Lines without options
 * decode and encode exactly as before (original clients see `+OK\n` and nothing else).
 */
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  encodeCookieLine,
  encodeOkLine,
  LineDecoder,
  MAX_COOKIE_LINE,
  OK_LINE,
  parseCookieLine,
} from '../../core/relay-line.js';
import { encodePeerLine, MAX_PEER_LINE, PeerNonces, verifyPeerLine } from '../../relay/peer-line.js';
import { newRid } from '../../relay/telemetry.js';

const hex = (b: Buffer) => b.toString('hex');

describe('cookie-line options', () => {
  it('a line without options is what it always was', () => {
    expect(parseCookieLine('Rabc')).toEqual({ role: 'hidden', cookie: 'abc' });
    expect(hex(encodeCookieLine('Rabc'))).toBe('526162630a');
    expect(encodeOkLine()).toBe(OK_LINE);
    expect(hex(encodeOkLine())).toBe('2b4f4b0a');
  });

  it.each([
    ['Rabc rid', { role: 'hidden', cookie: 'abc', rid: true }],
    ['Rabc rid target=up', { role: 'hidden', cookie: 'abc', rid: true, target: 'up' }],
    ['Rabc target=down', { role: 'hidden', cookie: 'abc', target: 'down' }],
    ['Iabc rid', { role: 'mobile', cookie: 'abc', rid: true }],
    // target is the agent's knowledge: meaningless (ignored) on a mobile client's line.
    ['Iabc target=up', { role: 'mobile', cookie: 'abc' }],
    // Unknown options of the option shape are ignored (forward compatibility).
    ['Rabc future-thing', { role: 'hidden', cookie: 'abc' }],
    ['Iabc rid zone=eu-west-1.a_b', { role: 'mobile', cookie: 'abc', rid: true }],
  ])('parses %j', (line, expected) => {
    expect(parseCookieLine(line)).toEqual(expected);
  });

  it.each([
    'Rabc ',
    'Rabc  rid',
    'Rabc rid ',
    'Rabc RID',
    'Rabc target=sideways',
    'Rabc target',
    'Rabc x=',
    `Rabc x=${'a'.repeat(33)}`,
    'Rabc x=a/b',
    'Rabc 9lives',
    'Rabc\trid',
  ])('refuses %j as malformed', (line) => {
    expect(() => parseCookieLine(line)).toThrow(/malformed cookie line/);
  });

  it('encodes options after one space: R<c> rid target=up\\n', () => {
    expect(encodeCookieLine('Rabc', ['rid', 'target=up']).toString('latin1')).toBe('Rabc rid target=up\n');
    expect(hex(encodeCookieLine('Iabc', ['rid']))).toBe(hex(Buffer.from('Iabc rid\n', 'latin1')));
  });

  it('answers +OK rid=<rid>\\n only when asked', () => {
    expect(hex(encodeOkLine('AAAAAAAAAAAAAAAA'))).toBe(
      hex(Buffer.from([0x2b, 0x4f, 0x4b, 0x20, ...Buffer.from('rid=AAAAAAAAAAAAAAAA'), 0x0a])),
    );
  });

  it('a line of the longest cookie with every known option fits MAX_COOKIE_LINE (192)', () => {
    expect(MAX_COOKIE_LINE).toBe(192);
    const line = encodeCookieLine(`R${'a'.repeat(120)}`, ['rid', 'target=down']);
    const got = new LineDecoder(MAX_COOKIE_LINE).push(line);
    expect(got?.line).toBe(`R${'a'.repeat(120)} rid target=down`);
    expect(() => new LineDecoder(MAX_COOKIE_LINE).push(Buffer.alloc(MAX_COOKIE_LINE, 0x61))).toThrow(
      /line too long/,
    );
  });

  it('rids are 16 base64url characters (12 random bytes) and differ', () => {
    const rids = new Set(Array.from({ length: 2_000 }, () => newRid()));
    expect(rids.size).toBe(2_000);
    for (const r of rids) expect(r).toMatch(/^[A-Za-z0-9_-]{16}$/);
  });
});

describe('peer request: rid and asking relay, signed', () => {
  const tag = { rid: 'AbCdEfGhIjKlMnOp', from: '3f2c9a1e-0b7d-4c55-9e1a-2b3c4d5e6f70' };

  it('lays the tag after the mac and signs it with the request', () => {
    const line = encodePeerLine(
      's3cret',
      { kind: 'generic', key: 'cookie123', waitMs: 250, tag },
      1_700_000_000_000,
    )
      .toString('latin1')
      .trimEnd();
    const m =
      /^PEER R cookie123 250 1700000000 ([A-Za-z0-9_-]{22}) ([A-Za-z0-9_-]{43}) rid=(\S+) from=(\S+)$/.exec(
        line,
      );
    expect(m).not.toBeNull();
    const [, nonce, mac, rid, from] = m as unknown as string[];
    expect([rid, from]).toEqual([tag.rid, tag.from]);
    const expected = createHmac('sha256', 's3cret')
      .update(`R cookie123 250 1700000000 ${nonce} ${tag.rid} ${tag.from}`)
      .digest('base64url');
    expect(mac).toBe(expected);
    expect(verifyPeerLine('s3cret', line, 1_700_000_000_000)).toEqual({
      kind: 'generic',
      key: 'cookie123',
      waitMs: 250,
      tag,
    });
    expect(line.length + 1).toBeLessThanOrEqual(MAX_PEER_LINE);
  });

  it('a tag changed in flight fails the mac; an untagged line (older relay) still verifies', () => {
    const now = Date.now();
    const line = encodePeerLine('s3cret', { kind: 'http', key: 'some-uuid', waitMs: 0, tag }, now)
      .toString('latin1')
      .trimEnd();
    const forged = line.replace(`rid=${tag.rid}`, 'rid=XXXXXXXXXXXXXXXX');
    expect(() => verifyPeerLine('s3cret', forged, now)).toThrow(/peer authentication failed/);
    const stripped = line.replace(/ rid=.*$/, '');
    expect(() => verifyPeerLine('s3cret', stripped, now)).toThrow(/peer authentication failed/);
    const plain = encodePeerLine('s3cret', { kind: 'http', key: 'some-uuid', waitMs: 0 }, now)
      .toString('latin1')
      .trimEnd();
    expect(plain).not.toContain('rid=');
    expect(verifyPeerLine('s3cret', plain, now, new PeerNonces())).toEqual({
      kind: 'http',
      key: 'some-uuid',
      waitMs: 0,
    });
  });

  it('refuses a malformed tag on both ends', () => {
    expect(() =>
      encodePeerLine(
        's',
        { kind: 'generic', key: 'k', waitMs: 0, tag: { rid: 'short', from: 'x' } },
        Date.now(),
      ),
    ).toThrow(/malformed peer request tag/);
    const line = encodePeerLine('s', { kind: 'generic', key: 'k', waitMs: 0 }, Date.now())
      .toString('latin1')
      .trimEnd();
    expect(() => verifyPeerLine('s', `${line} rid=short from=x`)).toThrow(/malformed peer line/);
  });
});
