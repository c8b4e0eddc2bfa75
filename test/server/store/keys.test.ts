/** The key schema is what the table's existing items are stored under: it must not drift. */
import { describe, expect, it } from 'vitest';
import {
  attemptsKey,
  changeSk,
  cookieItemKey,
  identityKey,
  lastRendezvousKey,
  parkKeys,
  registrationKey,
} from '../../../server/store/keys.js';

describe('the key schema', () => {
  it('puts a uuid’s items under SERVER#<uuid>', () => {
    expect(identityKey('u1')).toEqual({ pk: 'SERVER#u1', sk: 'IDENTITY' });
    expect(registrationKey('u1')).toEqual({ pk: 'SERVER#u1', sk: 'REGISTRATION' });
    expect(lastRendezvousKey('u1')).toEqual({ pk: 'SERVER#u1', sk: 'LAST' });
    expect(attemptsKey('uuid', 'u1')).toEqual({ pk: 'SERVER#u1', sk: 'ATTEMPTS' });
  });

  it('keys cookies, source counters and parks as before the split', () => {
    expect(cookieItemKey('abc')).toEqual({ pk: 'COOKIE#abc', sk: 'COOKIE' });
    expect(attemptsKey('source', '192.0.2.1')).toEqual({ pk: 'SOURCE#192.0.2.1', sk: 'ATTEMPTS' });
    expect(parkKeys('generic', 'abc')).toEqual({ pk: 'COOKIE#abc', prefix: 'PARK#' });
    expect(parkKeys('http', 'u1')).toEqual({ pk: 'SERVER#u1', prefix: 'HTTPPARK#' });
  });

  it('sorts change notices by time as text', () => {
    expect(changeSk(1_700_000_000_000)).toBe('001700000000000');
    expect(changeSk(9) < changeSk(10)).toBe(true);
  });
});
