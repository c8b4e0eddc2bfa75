/** Sizes, rates and limits as an operator types them (`10GB`, `1MB/s`, `none`) and reads them back. */
import { describe, expect, it } from 'vitest';
import { applyLimits, formatBytes, parseBytes, parseLimits, parseRate } from '../../server/usage-format.js';

describe('parseBytes', () => {
  it('reads decimal and binary units, with or without a space, in any case', () => {
    expect(parseBytes('10GB')).toBe(10_000_000_000);
    expect(parseBytes('512MiB')).toBe(512 * 2 ** 20);
    expect(parseBytes('1.5TB')).toBe(1_500_000_000_000);
    expect(parseBytes('1000')).toBe(1000);
    expect(parseBytes('2 kb')).toBe(2000);
    expect(parseBytes('3KiB')).toBe(3072);
    expect(parseBytes(' 7 B ')).toBe(7);
  });

  it('refuses anything else with BAD_REQUEST quoting the input', () => {
    for (const bad of ['', 'ten', '10XB', '-5', '1.5', '10 G B', '1e9', '99999999999PB'])
      expect(() => parseBytes(bad), bad).toThrow(/not a size in bytes/);
  });
});

describe('parseRate', () => {
  it('reads bytes per second', () => {
    expect(parseRate('1MB/s')).toBe(1_000_000);
    expect(parseRate('800KiB/s')).toBe(800 * 1024);
    expect(parseRate('2000')).toBe(2000);
    expect(parseRate('5 MB / s')).toBe(5_000_000);
  });
  it('refuses a rate per something else', () => {
    expect(() => parseRate('1MB/h')).toThrow(/not a rate in bytes per second/);
  });
});

describe('formatBytes', () => {
  it('prints three significant digits in decimal units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1500)).toBe('1.5 kB');
    expect(formatBytes(10e9)).toBe('10 GB');
    expect(formatBytes(123_456_789)).toBe('123 MB');
    expect(formatBytes(999_999)).toBe('1 MB');
  });
  it('prints what parseBytes reads back', () => {
    for (const n of [1, 1234, 98_765_432, 10e9, 2 ** 40])
      expect(Math.abs(parseBytes(formatBytes(n)) - n) / n).toBeLessThan(0.005);
  });
});

describe('parseLimits and applyLimits', () => {
  it('a value sets, none/off clears, absent or empty keeps', () => {
    const change = parseLimits({ quota: '10GB', bandwidth: 'none', maxConcurrent: '' });
    expect(change).toEqual({ monthlyBytes: 10e9, bytesPerSecond: null });
    expect(applyLimits({ bytesPerSecond: 5000, maxConcurrent: 3 }, change)).toEqual({
      monthlyBytes: 10e9,
      maxConcurrent: 3,
    });
    expect(applyLimits({ maxConcurrent: 3 }, parseLimits({ maxConcurrent: 'OFF' }))).toBeUndefined();
    expect(parseLimits({ maxConcurrent: '4', bandwidth: '1MB/s' })).toEqual({
      maxConcurrent: 4,
      bytesPerSecond: 1e6,
    });
  });
  it('a bad value names its option', () => {
    expect(() => parseLimits({ quota: 'lots' })).toThrow(/^quota: not a size/);
    expect(() => parseLimits({ quota: '0' })).toThrow(/^quota: .*above zero/);
    expect(() => parseLimits({ bandwidth: 'fast' })).toThrow(/^bandwidth: not a rate/);
    expect(() => parseLimits({ maxConcurrent: '2.5' })).toThrow(/^max-concurrent: not a whole number/);
    expect(() => parseLimits({ maxConcurrent: '0' })).toThrow(/^max-concurrent: .*above zero/);
  });
});
