/**
 * Text from outside (a dump's keys, a server's diagnostic, an argument) made safe to print on an
 * operator's terminal: control characters — C0 (CR, LF, ESC …), DEL, C1 (which some terminals
 * read as escape sequences: U+009B is CSI), the line and paragraph separators and the
 * bidirectional overrides — are written as visible escapes, so input can neither move the
 * cursor, recolour the screen, nor forge a line of its own.
 */

/** Every character `printable` escapes. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this finds
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\u001b': '\\e' };

function escapeOne(c: string): string {
  const named = NAMED[c];
  if (named) return named;
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u{${code.toString(16)}}`;
}

/** `text` with every control character escaped (`\n`, `\r`, `\t`, `\e`, `\xHH`, `\u{HHHH}`). */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, escapeOne);
}

/**
 * `JSON.stringify(value)` with the characters JSON leaves raw but a terminal may act on (DEL,
 * C1, the separators and overrides) written as `\uHHHH` too: still valid JSON, same value.
 */
export function printableJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
