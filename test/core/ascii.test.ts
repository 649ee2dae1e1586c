/**
 * firmware/core/ascii.ts replaced the firmware's regular expressions; each
 * check must accept exactly what the expression it replaced accepted.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { isAlnum, isCharsOf, isDigit, isHexDigit, isHostChar, isIdChar, isIpv4Literal, isWordChar, type CharTest } from '../../firmware/core/ascii.js';

const cases: [string, RegExp, (s: string) => boolean][] = [
  ['device id', /^[A-Za-z0-9_.-]{1,23}$/, (s) => isCharsOf(s, 1, 23, isIdChar)],
  ['reading kind', /^[A-Za-z0-9_-]{1,32}$/, (s) => isCharsOf(s, 1, 32, isWordChar)],
  ['interval', /^[0-9]{1,6}$/, (s) => isCharsOf(s, 1, 6, isDigit)],
  ['device key', /^[0-9a-fA-F]{64}$/, (s) => isCharsOf(s, 64, 64, isHexDigit)],
  ['host', /^[A-Za-z0-9.-]{1,253}$/, (s) => isCharsOf(s, 1, 253, isHostChar)],
  ['alnum', /^[A-Za-z0-9]{0,9}$/, (s) => isCharsOf(s, 0, 9, isAlnum)],
  ['IPv4', /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/, isIpv4Literal],
];

/** Strings biased towards the interesting alphabet: the set's edges, digits, dots, and a few others. */
const near = fc.string({ unit: fc.constantFrom(...'09afAFgzGZ_.-/ +é\u0000'.split(''), ...'0123456789.'.split('')), maxLength: 70 });
const long = fc.string({ unit: fc.constantFrom('a', 'F', '0', '9'), minLength: 60, maxLength: 260 });

describe('ASCII charset checks', () => {
  it.each(cases)('%s: same answers as the regular expression', (_name, re, check) => {
    fc.assert(fc.property(fc.oneof(near, long, fc.string(), fc.ipV4()), (s) => check(s) === re.test(s)), { numRuns: 3000 });
  });

  it('IPv4 literals: canonical dotted quads only', () => {
    for (const ok of ['0.0.0.0', '127.0.0.1', '255.255.255.255', '10.1.20.199']) expect(isIpv4Literal(ok), ok).toBe(true);
    for (const bad of ['256.0.0.1', '01.2.3.4', '1.2.3', '1.2.3.4.5', '1..3.4', ' 1.2.3.4', '1.2.3.4 ', 'localhost', '', '1.2.3.-4', '١.2.3.4']) expect(isIpv4Literal(bad), bad).toBe(false);
  });

  it('rejects non-strings and lengths outside the bounds', () => {
    const any: CharTest = () => true;
    expect(isCharsOf(undefined, 0, 5, any)).toBe(false);
    expect(isCharsOf(12, 0, 5, any)).toBe(false);
    expect(isCharsOf('', 1, 5, any)).toBe(false);
    expect(isCharsOf('abcdef', 1, 5, any)).toBe(false);
    expect(isCharsOf('abcde', 1, 5, any)).toBe(true);
  });
});
