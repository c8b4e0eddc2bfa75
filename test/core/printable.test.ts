/** core/printable.ts: input made safe for a terminal, and JSON that stays the same value. */
import { describe, expect, it } from 'vitest';
import { printable, printableJson } from '../../core/printable.js';

describe('printable', () => {
  it('escapes C0, DEL, C1, the separators and bidi overrides; leaves other text alone', () => {
    expect(printable('a\nb\rc\td\u001b[31me')).toBe('a\\nb\\rc\\td\\e[31me');
    expect(printable('\u0000\u0007\u007f\u0085\u009b')).toBe('\\x00\\x07\\x7f\\x85\\x9b');
    expect(printable('x\u2028y\u202ez\u2066')).toBe('x\\u{2028}y\\u{202e}z\\u{2066}');
    expect(printable('héllo wörld — 日本 \\ "q"')).toBe('héllo wörld — 日本 \\ "q"');
  });

  it('printableJson is valid JSON of the same value with no raw C1 or override', () => {
    const value = { key: 'a\u009b31m\u202e\n', n: 1 };
    const text = printableJson(value);
    expect(text).not.toMatch(/[\u007f-\u009f\u202a-\u202e]/);
    expect(JSON.parse(text)).toEqual(value);
  });
});
