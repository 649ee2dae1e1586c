import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { utf8Encode, utf8Decode } from '../../firmware/core/utf8.js';
import {
  encodeRemainingLength,
  decodeRemainingLength,
  encodeVarint,
  decodeVarint,
  MQTT_MAX_REMAINING_LENGTH,
  VARINT_MAX,
} from '../../firmware/core/varint.js';
import { ByteReader, constantTimeEqual, concatBytes, fromHex, toHex, u48be, readU48be, zeroize } from '../../firmware/core/bytes.js';
import { isMqsecError } from '../../firmware/core/errors.js';

const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    if (isMqsecError(e)) return e.code;
    throw e;
  }
  return 'no error';
};

describe('utf8', () => {
  it('matches TextEncoder/TextDecoder on well-formed strings', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => {
        const enc = utf8Encode(s);
        expect(enc).toEqual(new Uint8Array(new TextEncoder().encode(s)));
        expect(utf8Decode(enc)).toBe(s);
      }),
    );
  });
  it('rejects exactly what a fatal TextDecoder rejects (plus U+0000 when asked)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 16 }), (b) => {
        let ref: string | undefined;
        try {
          ref = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(b);
        } catch {
          ref = undefined;
        }
        if (ref === undefined) expect(code(() => utf8Decode(b))).toBe('INVALID_UTF8');
        else expect(utf8Decode(b)).toBe(ref);
      }),
      { numRuns: 2000 },
    );
    expect(code(() => utf8Decode(new Uint8Array([0x41, 0]), true))).toBe('INVALID_UTF8');
    expect(code(() => utf8Encode('\ud800'))).toBe('INVALID_UTF8');
  });
});

describe('varint', () => {
  it('MQTT remaining length round-trips and is bounded', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MQTT_MAX_REMAINING_LENGTH }), (n) => {
        const e = encodeRemainingLength(n);
        expect(decodeRemainingLength(e, 0)).toEqual({ value: n, length: e.length });
        expect(decodeRemainingLength(e.subarray(0, e.length - 1), 0)).toBeUndefined();
      }),
    );
    expect(code(() => encodeRemainingLength(MQTT_MAX_REMAINING_LENGTH + 1))).toBe('OVERSIZE');
    expect(code(() => decodeRemainingLength(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x01]), 0))).toBe('MALFORMED');
    expect(code(() => decodeRemainingLength(new Uint8Array([0x80, 0x00]), 0))).toBe('MALFORMED');
  });
  it('LEB128 varint round-trips, rejects non-minimal and oversize', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: VARINT_MAX }), (n) => {
        const e = encodeVarint(n);
        expect(decodeVarint(e, 0)).toEqual({ value: n, length: e.length });
      }),
    );
    expect(code(() => decodeVarint(new Uint8Array([0x80, 0x00]), 0))).toBe('MALFORMED');
    expect(code(() => decodeVarint(new Uint8Array([0x80]), 0))).toBe('TRUNCATED');
    expect(code(() => decodeVarint(new Uint8Array(8).fill(0xff), 0))).toBe('MALFORMED');
    expect(code(() => encodeVarint(VARINT_MAX + 1))).toBe('MALFORMED');
    expect(code(() => encodeVarint(-1))).toBe('MALFORMED');
  });
});

describe('bytes', () => {
  it('constantTimeEqual is equality', () => {
    fc.assert(
      fc.property(fc.uint8Array(), fc.uint8Array(), (a, b) => {
        expect(constantTimeEqual(a, b)).toBe(toHex(a) === toHex(b));
        expect(constantTimeEqual(a, a.slice())).toBe(true);
      }),
    );
  });
  it('hex, u48 and concat round-trip; zeroize clears', () => {
    fc.assert(fc.property(fc.uint8Array(), (a) => { expect(fromHex(toHex(a))).toEqual(a); }));
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 48 - 1 }), (n) => { expect(readU48be(u48be(n), 0)).toBe(n); }));
    expect(concatBytes(new Uint8Array([1]), new Uint8Array([2, 3]))).toEqual(new Uint8Array([1, 2, 3]));
    const k = new Uint8Array([1, 2, 3]);
    zeroize(k, undefined);
    expect(k).toEqual(new Uint8Array(3));
    expect(code(() => fromHex('abc'))).toBe('MALFORMED');
    expect(code(() => fromHex('zz'))).toBe('MALFORMED');
  });
  it('ByteReader never reads past the end', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 10 }), fc.array(fc.integer({ min: 0, max: 12 }), { maxLength: 6 }), (buf, reads) => {
        const r = new ByteReader(buf);
        for (const n of reads) {
          if (n <= r.remaining) expect(r.bytes(n).length).toBe(n);
          else expect(code(() => r.bytes(n))).toBe('TRUNCATED');
        }
      }),
    );
    const r = new ByteReader(new Uint8Array([1, 2, 3]));
    r.u8();
    expect(code(() => r.end())).toBe('MALFORMED');
    expect(code(() => r.u32())).toBe('TRUNCATED');
  });
});
