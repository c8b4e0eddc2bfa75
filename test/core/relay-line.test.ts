import { describe, expect, it } from 'vitest';
import { isRendezvousError } from '../../core/errors.js';
import {
  directOfOkLine,
  encodeCookieLine,
  encodeErrorLine,
  encodeOkLine,
  LineDecoder,
  MAX_COOKIE_LINE,
  OK_LINE,
  parseCookieLine,
  parseStatusLine,
} from '../../core/relay-line.js';

const hex = (b: Buffer) => b.toString('hex');

describe('relay line codec: byte vectors', () => {
  it('encodes +OK as 2b 4f 4b 0a', () => {
    expect(hex(OK_LINE)).toBe('2b4f4b0a');
  });

  it('encodes -ERR with one space and a newline', () => {
    expect(hex(encodeErrorLine('unknown cookie'))).toBe(
      hex(Buffer.from([0x2d, 0x45, 0x52, 0x52, 0x20, ...Buffer.from('unknown cookie'), 0x0a])),
    );
  });

  it('forces a diagnostic with control bytes onto one printable line', () => {
    expect(encodeErrorLine('bad\r\nthing\x00here').toString('latin1')).toBe('-ERR bad thing here\n');
  });

  it('encodes a cookie line as the prefixed cookie and 0a', () => {
    expect(hex(encodeCookieLine('Rabc'))).toBe('526162630a');
  });

  it.each([
    ['Rabc_DEF-123', { role: 'hidden', cookie: 'abc_DEF-123' }],
    ['IZZZ', { role: 'mobile', cookie: 'ZZZ' }],
  ])('parses %s', (line, expected) => {
    expect(parseCookieLine(line)).toEqual(expected);
  });

  it.each(['', 'R', 'Xabc', 'rabc', 'Rab C', 'Rab\x00c', 'Rab/c', `R${'a'.repeat(121)}`])(
    'rejects malformed line %j',
    (line) => {
      expect(() => parseCookieLine(line)).toThrow(/malformed cookie line/);
    },
  );

  it('parses status lines', () => {
    expect(parseStatusLine('+OK')).toEqual({ ok: true, text: '+OK' });
    expect(parseStatusLine('-ERR no hidden server')).toEqual({ ok: false, diagnostic: 'no hidden server' });
    expect(() => parseStatusLine('HTTP/1.1 200 OK')).toThrow();
  });
});

describe('the direct option', () => {
  it('is taken on R lines only, beside the others', () => {
    expect(parseCookieLine('Rabc rid direct target=up')).toEqual({
      role: 'hidden',
      cookie: 'abc',
      rid: true,
      direct: true,
      target: 'up',
    });
    expect(parseCookieLine('Iabc direct')).toEqual({ role: 'mobile', cookie: 'abc' });
  });

  it('is said after +OK only when given; a client reads it back, IPv6 in brackets', () => {
    expect(encodeOkLine()).toBe(OK_LINE);
    expect(encodeOkLine(undefined, '10.0.0.7:7000').toString('latin1')).toBe('+OK direct=10.0.0.7:7000\n');
    expect(encodeOkLine('r1', '[2001:db8::1]:7000').toString('latin1')).toBe(
      '+OK rid=r1 direct=[2001:db8::1]:7000\n',
    );
    expect(directOfOkLine('+OK rid=r1 direct=[2001:db8::1]:7000')).toEqual({
      host: '2001:db8::1',
      port: 7000,
    });
    expect(directOfOkLine('+OK direct=relay-1.example:7000')).toEqual({
      host: 'relay-1.example',
      port: 7000,
    });
    for (const bad of [
      '+OK',
      '+OK direct=',
      '+OK direct=host',
      '+OK direct=a:70000',
      '+OK direct=a/b:1',
      '+OK direct=::1:1',
    ])
      expect(directOfOkLine(bad)).toBeUndefined();
  });
});

describe('LineDecoder', () => {
  it('decodes a line split across chunks, one byte at a time, keeping what follows', () => {
    const d = new LineDecoder(MAX_COOKIE_LINE);
    const bytes = Buffer.from('Iabc\nHELLO');
    let out: ReturnType<LineDecoder['push']> = null;
    for (let i = 0; i < bytes.length && !out; i++) out = d.push(bytes.subarray(i, i + 1));
    expect(out?.line).toBe('Iabc');
    const d2 = new LineDecoder(MAX_COOKIE_LINE);
    expect(d2.push(Buffer.from('Iab'))).toBeNull();
    const r = d2.push(Buffer.from('c\nHELLO'));
    expect(r?.line).toBe('Iabc');
    expect(r?.rest.toString()).toBe('HELLO');
  });

  it('strips one CR before LF', () => {
    expect(new LineDecoder(128).push(Buffer.from('Rabc\r\n'))?.line).toBe('Rabc');
  });

  it('accepts a line of exactly the limit including its newline', () => {
    const line = `R${'a'.repeat(MAX_COOKIE_LINE - 2)}\n`;
    expect(Buffer.byteLength(line)).toBe(MAX_COOKIE_LINE);
    expect(new LineDecoder(MAX_COOKIE_LINE).push(Buffer.from(line))?.line.length).toBe(MAX_COOKIE_LINE - 1);
  });

  it('rejects one byte over the limit, with or without a newline', () => {
    const over = Buffer.from(`R${'a'.repeat(MAX_COOKIE_LINE - 1)}\n`);
    expect(() => new LineDecoder(MAX_COOKIE_LINE).push(over)).toThrow(/line too long/);
    const d = new LineDecoder(MAX_COOKIE_LINE);
    expect(d.push(Buffer.alloc(MAX_COOKIE_LINE - 1, 0x61))).toBeNull();
    try {
      d.push(Buffer.from('a'));
      expect.unreachable();
    } catch (err) {
      expect(isRendezvousError(err, 'LINE_TOO_LONG')).toBe(true);
    }
  });

  it('cuts off a 1 MB line at once without buffering it', () => {
    expect(() => new LineDecoder(MAX_COOKIE_LINE).push(Buffer.alloc(1 << 20, 0x41))).toThrow(/line too long/);
  });
});
