/**
 * Message codecs (docs/protocol.md §3, §5, §6, §8.1): round trips, canonical
 * encodings, and fuzzing: every parser on arbitrary bytes either returns or
 * throws a typed MqsecError, never anything else, never hangs.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { isMqsecError } from '../../firmware/core/errors.js';
import { base64urlDecode, base64urlEncode } from '../../firmware/secure/base64url.js';
import {
  buildEnvelope,
  buildKx1,
  buildKx1Body,
  buildKx2,
  buildKx2Body,
  buildKx3,
  buildCounterHint,
  buildCounterHintBody,
  buildResume,
  buildResumeBody,
  buildResumeConfirm,
  buildResumeConfirmBody,
  fromTextForm,
  parseCounterHint,
  parseEnvelope,
  parseKx1,
  parseKx2,
  parseKx3,
  parsePassword,
  parseResume,
  parseResumeConfirm,
  toTextForm,
} from '../../firmware/secure/messages.js';
import { decodeDeviceRecord, encodeDeviceRecord } from '../../firmware/secure/device.js';
import { BROKER_NONCE_LENGTH, COUNTER_MAX, SID_LENGTH } from '../../firmware/secure/constants.js';

const b = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });

function typedOrOk(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!isMqsecError(e)) throw new Error(`foreign error: ${String(e)}`);
  }
}

describe('codecs round-trip', () => {
  it('KX1 / KX2 / KX3 / resume / confirmation / hint / envelope', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: COUNTER_MAX }), b(32), b(16), b(SID_LENGTH), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0x1fffff }), fc.uint8Array({ minLength: 16, maxLength: 60 }), (ctr, pub, tag, sid, epoch, seq, sealed) => {
        const k1 = buildKx1(buildKx1Body(1, ctr, pub), tag);
        const p1 = parseKx1(k1);
        expect([p1.suite, p1.counter, p1.ephemeralPublic, p1.tag]).toEqual([1, ctr, pub, tag]);
        const k2 = parseKx2(buildKx2(buildKx2Body(pub), tag));
        expect([k2.ephemeralPublic, k2.tag]).toEqual([pub, tag]);
        expect(parseKx3(buildKx3(tag)).tag).toEqual(tag);
        const r = parseResume(buildResume(buildResumeBody(sid, ctr), tag));
        expect([r.sid, r.counter, r.tag]).toEqual([sid, ctr, tag]);
        const ns = pub.subarray(0, BROKER_NONCE_LENGTH);
        const rc = parseResumeConfirm(buildResumeConfirm(buildResumeConfirmBody(ns), tag));
        expect([rc.brokerNonce, rc.tag]).toEqual([ns, tag]);
        const h = parseCounterHint(buildCounterHint(buildCounterHintBody(ctr), tag));
        expect([h.counter, h.tag]).toEqual([ctr, tag]);
        const e = parseEnvelope(buildEnvelope(epoch, seq, sealed));
        expect([e.epoch, e.seq, e.sealed]).toEqual([epoch, seq, sealed]);
        expect(fromTextForm(toTextForm(k1))).toEqual(k1);
      }),
      { numRuns: 200 },
    );
  });

  it('counters above 2^32-1 are refused both ways', () => {
    expect(() => buildKx1Body(1, COUNTER_MAX + 1, new Uint8Array(32))).toThrow(/MALFORMED/);
    const over = new Uint8Array([0x14, 1, 2, 3, 4, 0x80, 0x80, 0x80, 0x80, 0x10, ...new Uint8Array(16)]);
    expect(() => parseResume(over)).toThrow(/MALFORMED/);
    expect(() => parseCounterHint(new Uint8Array([0x18, 0x80, 0x80, 0x80, 0x80, 0x10, ...new Uint8Array(16)]))).toThrow(/MALFORMED/);
  });

  it('non-minimal counter varints are refused (one encoding per value)', () => {
    const nonMinimal = new Uint8Array([0x14, 1, 2, 3, 4, 0x81, 0x00, ...new Uint8Array(16)]);
    expect(() => parseResume(nonMinimal)).toThrow(/MALFORMED/);
  });

  it('base64url: RFC 4648 vectors, canonical decoding', () => {
    const enc = (s: string) => base64urlEncode(new TextEncoder().encode(s));
    expect(['', 'f', 'fo', 'foo', 'foob', 'fooba', 'foobar'].map(enc)).toEqual(['', 'Zg', 'Zm8', 'Zm9v', 'Zm9vYg', 'Zm9vYmE', 'Zm9vYmFy']);
    expect(base64urlEncode(new Uint8Array([0xfb, 0xff]))).toBe('-_8');
    expect(() => base64urlDecode('Zg==')).toThrow(/MALFORMED/);
    expect(() => base64urlDecode('Zh')).toThrow(/MALFORMED/); // non-zero trailing bits
    expect(() => base64urlDecode('Z')).toThrow(/MALFORMED/);
    expect(() => base64urlDecode('Zm+v')).toThrow(/MALFORMED/);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 100 }), (x) => { expect(base64urlDecode(base64urlEncode(x))).toEqual(x); }));
  });

  it('device storage record round-trips and rejects corruption with STORAGE', () => {
    const t = { suite: 1, sid: new Uint8Array(SID_LENGTH).fill(1), authKey: new Uint8Array(32).fill(2), chainStart: 33, chainIndex: 40, chainKey: new Uint8Array(32).fill(3) };
    expect(decodeDeviceRecord(encodeDeviceRecord(64, t))).toEqual({ counterLimit: 64, ticket: t });
    expect(decodeDeviceRecord(encodeDeviceRecord(64, undefined))).toEqual({ counterLimit: 64 });
    expect(() => decodeDeviceRecord(encodeDeviceRecord(32, t))).toThrow(/STORAGE/); // chain ahead of the counter
    expect(() => decodeDeviceRecord(encodeDeviceRecord(64, { ...t, chainStart: 41 }))).toThrow(/STORAGE/); // chain before its start
    // a record of the first release (8-byte sid, no chainStart): its counter is kept, its ticket dropped
    const v1 = new Uint8Array([1, 0, 0, 0, 0, 0, 96, 1, 1, ...new Uint8Array(8 + 32 + 6 + 32)]);
    expect(decodeDeviceRecord(v1)).toEqual({ counterLimit: 96 });
    expect(() => decodeDeviceRecord(v1.subarray(0, v1.length - 1))).toThrow(/STORAGE/);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 100 }), (x) => { typedOrOk(() => decodeDeviceRecord(x)); }));
  });
});

describe('parsers on arbitrary input (fuzz)', () => {
  const parsers: [string, (x: Uint8Array) => unknown][] = [
    ['KX1', parseKx1],
    ['KX2', parseKx2],
    ['KX3', parseKx3],
    ['resume', parseResume],
    ['resume confirmation', parseResumeConfirm],
    ['counter hint', parseCounterHint],
    ['envelope', parseEnvelope],
    ['password', (x) => parsePassword(x)],
    ['text form', (x) => parsePassword(new TextDecoder().decode(x))],
  ];
  it.each(parsers)('%s: returns or throws MqsecError', (_n, parse) => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ minLength: 1, maxLength: 60 }).map((x) => ((x[0] = [0x11, 0x12, 0x13, 0x14, 0x17, 0x18, 0x7e][x[0] % 7]), x))), (x) => { typedOrOk(() => parse(x)); }),
      { numRuns: 1000 },
    );
  });
});
