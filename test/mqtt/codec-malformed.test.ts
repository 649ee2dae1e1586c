/**
 * Bad input to the firmware codec: one hand-written vector per defect, and
 * fuzzing that checks the parser only ever fails with an MqsecError and never
 * buffers more than its maximum packet size.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MqsecError, type ErrorCode } from '../../firmware/core/errors.js';
import { toHex, fromHex } from '../../firmware/core/bytes.js';
import {
  decodePacket,
  encodePacket,
  encodePublish,
  MqttParser,
  topicMatches,
  type MqttPacket,
} from '../../firmware/mqtt/codec.js';
import { anyPacket } from './arbitraries.js';
import { feedAll, feedChunks } from './stream-scenario.js';
import { malformedVectors as vectors } from './vectors.js';
import { untypedEncodeFailures, wrongTypeCaseCount } from './wrong-types.js';

function codeOf(f: () => unknown): ErrorCode | 'no error' {
  try {
    f();
    return 'no error';
  } catch (e) {
    if (e instanceof MqsecError) return e.code;
    throw e; // anything else is a bug
  }
}


describe('malformed packets', () => {
  it.each(vectors)('%s -> %s', (_name, hex, code) => {
    const bytes = fromHex(hex.replace(/ /g, ''));
    expect(codeOf(() => decodePacket(bytes))).toBe(code);
    // The stream parser reports the same defect (with no size limit in the way), except a short
    // packet, for which it simply waits for more bytes.
    const parser = new MqttParser({ maxPacketSize: 2 ** 30 });
    if (code === 'TRUNCATED' && bytes.length < 4) return;
    const streamCode = codeOf(() => feedAll(parser, bytes));
    if (code === 'TRUNCATED') expect(['no error', 'TRUNCATED']).toContain(streamCode);
    else expect(streamCode).toBe(code);
  });

  it('a vector stripped of its defect decodes (the vectors are not wrong for another reason)', () => {
    expect(decodePacket(fromHex('3005000361 2f62'.replace(/ /g, '')))).toMatchObject({ type: 'publish', topic: 'a/b' });
    expect(decodePacket(fromHex('40020001'))).toEqual({ type: 'puback', messageId: 1 });
    expect(decodePacket(fromHex('100d00044d5154540402000a000161'))).toMatchObject({ type: 'connect', clientId: 'a', keepalive: 10 });
    expect(decodePacket(fromHex('8206000100016101'))).toMatchObject({ type: 'subscribe' });
  });

  it('OVERSIZE is raised from the fixed header, before the body is buffered', () => {
    const parser = new MqttParser({ maxPacketSize: 100 });
    // PUBLISH announcing 101 + 2 header bytes; the body never arrives.
    expect(codeOf(() => feedAll(parser, fromHex('3065')))).toBe('OVERSIZE');
    expect(parser.bufferedBytes).toBe(0);
    // A failed parser stays failed: the stream position is lost.
    expect(codeOf(() => feedAll(parser, fromHex('c000')))).toBe('OVERSIZE');
    parser.reset();
    expect(feedAll(parser, fromHex('c000'))).toEqual([{ type: 'pingreq' }]);
    // Exactly at the limit is accepted.
    const atLimit = encodePublish({ type: 'publish', topic: 't', payload: new Uint8Array(100 - 5), qos: 0, dup: false, retain: false });
    expect(atLimit.length).toBe(100);
    expect(feedAll(parser, atLimit)).toHaveLength(1);
  });

  it('the generator refuses what the parser refuses', () => {
    const pub = (over: Partial<Extract<MqttPacket, { type: 'publish' }>>) => () =>
      encodePacket({ type: 'publish', topic: 't', payload: new Uint8Array(0), qos: 0, dup: false, retain: false, ...over });
    expect(codeOf(pub({ topic: 'a/+' }))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(pub({ topic: '' }))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(pub({ topic: 'a\u0000' }))).toBe('INVALID_UTF8');
    expect(codeOf(pub({ topic: 'a\ud800' }))).toBe('INVALID_UTF8');
    expect(codeOf(pub({ dup: true }))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(pub({ qos: 1 }))).toBe('PROTOCOL_VIOLATION'); // no packet id
    expect(codeOf(pub({ qos: 3 as never, messageId: 1 }))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(pub({ topic: 'x'.repeat(70000) }))).toBe('OVERSIZE');
    expect(codeOf(() => encodePacket({ type: 'connect', clientId: 'a', cleanSession: true, keepalive: 1, password: new Uint8Array(1) }))).toBe(
      'PROTOCOL_VIOLATION',
    );
    expect(codeOf(() => encodePacket({ type: 'connect', clientId: '', cleanSession: false, keepalive: 1 }))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => encodePacket({ type: 'connect', clientId: 'a', cleanSession: true, keepalive: 70000 }))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => encodePacket({ type: 'subscribe', messageId: 1, subscriptions: [] }))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => encodePacket({ type: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/#/b', qos: 0 }] }))).toBe(
      'PROTOCOL_VIOLATION',
    );
    expect(codeOf(() => encodePacket({ type: 'puback', messageId: 0 }))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => encodePacket({ type: 'suback', messageId: 1, granted: [3] }))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => encodePacket({ type: 'auth' } as never))).toBe('UNKNOWN_TYPE');
  });

  it('topic matching follows section 4.7', () => {
    expect(topicMatches('a/+/c', 'a/b/c')).toBe(true);
    expect(topicMatches('a/+', 'a/b/c')).toBe(false);
    expect(topicMatches('a/#', 'a')).toBe(true);
    expect(topicMatches('#', '$SYS/x')).toBe(false);
    expect(topicMatches('+/x', '$mqsec/x')).toBe(false);
    expect(topicMatches('$mqsec/#', '$mqsec/kx/d1')).toBe(true);
    expect(topicMatches('a/b', 'a/b/')).toBe(false);
  });
});

describe('fuzzing', () => {
  it('decodePacket on arbitrary bytes either decodes or throws an MqsecError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (b) => {
        codeOf(() => decodePacket(b));
      }),
      { numRuns: 3000 },
    );
  });

  it('corrupted valid packets either decode (and re-encode identically) or throw an MqsecError', () => {
    fc.assert(
      fc.property(anyPacket, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (p, edits) => {
        const b = encodePacket(p).slice();
        for (const [at, v] of edits) b[at % b.length] = v;
        let decoded: MqttPacket | undefined;
        const code = codeOf(() => (decoded = decodePacket(b)));
        if (code === 'no error') expect(toHex(encodePacket(decoded!))).toBe(toHex(b));
      }),
      { numRuns: 2000 },
    );
  });

  it('arbitrary byte streams chopped anywhere: only MqsecErrors, never more than maxPacketSize buffered', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.uint8Array({ maxLength: 40 }), anyPacket.map(encodePacket)), { maxLength: 10 }),
        fc.integer({ min: 2, max: 300 }),
        (chunks, max) => {
          const parser = new MqttParser({ maxPacketSize: max });
          for (const c of chunks) {
            if (codeOf(() => feedAll(parser, c)) !== 'no error') {
              expect(parser.error).toBeInstanceOf(MqsecError);
              expect(codeOf(() => feedAll(parser, new Uint8Array([0xc0, 0])))).toBe(parser.error!.code);
              return;
            }
            expect(parser.bufferedBytes).toBeLessThanOrEqual(max);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('the streaming parser and decodePacket agree on every split of one packet', () => {
    fc.assert(
      fc.property(anyPacket, (p) => {
        const b = encodePacket(p);
        const want = JSON.stringify(decodePacket(b), (_k, v) => (v instanceof Uint8Array ? toHex(v) : v));
        for (let cut = 0; cut <= b.length; cut++) {
          const parser = new MqttParser({ maxPacketSize: 1 << 16 });
          const got = [...feedAll(parser, b.subarray(0, cut)), ...feedAll(parser, b.subarray(cut))];
          expect(got).toHaveLength(1);
          expect(JSON.stringify(got[0], (_k, v) => (v instanceof Uint8Array ? toHex(v) : v))).toBe(want);
        }
      }),
      { numRuns: 150 },
    );
  });
});

describe('a malformed packet after valid ones (delivery does not depend on segmentation)', () => {
  /** Vectors the stream parser refuses on their own bytes (a short TRUNCATED one just waits for more). */
  const definite = vectors.filter(([, , code]) => code !== 'TRUNCATED');
  const concat = (parts: Uint8Array[]) => {
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return all;
  };
  const split = (all: Uint8Array, cuts: number[]) => {
    const points = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
    const chunks: Uint8Array[] = [];
    let prev = 0;
    for (const at of [...points, all.length]) {
      chunks.push(all.slice(prev, at));
      prev = at;
    }
    return chunks;
  };

  it('a valid PUBLISH and a malformed packet in one chunk: the PUBLISH is delivered, then the error', () => {
    const pub = encodePublish({ type: 'publish', topic: 'a/b', payload: new Uint8Array([1, 2]), qos: 0, dup: false, retain: false });
    const r = feedChunks([concat([pub, fromHex('f000')])], 1024);
    expect(r.code).toBe('UNKNOWN_TYPE');
    expect(r.packets).toEqual([decodePacket(pub)]);
  });

  it('a callback that throws fails the parser with that error', () => {
    const parser = new MqttParser();
    const seen: string[] = [];
    const refuse = (p: MqttPacket) => {
      seen.push(p.type);
      throw new MqsecError('PROTOCOL_VIOLATION', 'not now');
    };
    expect(codeOf(() => parser.feed(fromHex('c000d000'), refuse))).toBe('PROTOCOL_VIOLATION');
    expect(seen).toEqual(['pingreq']);
    expect(codeOf(() => feedAll(parser, fromHex('c000')))).toBe('PROTOCOL_VIOLATION');
  });

  it('valid packets then any malformed vector, cut anywhere: every valid packet is delivered, then the vector code', () => {
    fc.assert(
      fc.property(
        fc.array(anyPacket.map(encodePacket), { maxLength: 5 }),
        fc.constantFrom(...definite),
        fc.array(fc.nat(), { maxLength: 8 }),
        (valid, [, hex, code], cuts) => {
          const all = concat([...valid, fromHex(hex.replace(/ /g, '')), fromHex('c000')]);
          const got = feedChunks(split(all, cuts), 2 ** 30);
          expect(got.code).toBe(code);
          expect(got.packets).toEqual(valid.map((v) => decodePacket(v)));
        },
      ),
      { numRuns: 1500 },
    );
  });

  it('arbitrary streams: the packets delivered and the error are the same for every segmentation', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof({ weight: 4, arbitrary: anyPacket.map(encodePacket) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 8 }) }), {
          minLength: 1,
          maxLength: 8,
        }),
        fc.array(fc.nat(), { maxLength: 10 }),
        fc.integer({ min: 2, max: 400 }),
        (parts, cuts, max) => {
          const all = concat(parts);
          const whole = feedChunks([all], max);
          const bytewise = feedChunks(split(all, [...Array(all.length).keys()]), max);
          const cut = feedChunks(split(all, cuts), max);
          expect({ packets: cut.packets, code: cut.code }).toEqual({ packets: whole.packets, code: whole.code });
          expect({ packets: bytewise.packets, code: bytewise.code }).toEqual({ packets: whole.packets, code: whole.code });
        },
      ),
      { numRuns: 1500 },
    );
  });
});

describe('wrongly typed input to the generator', () => {
  it('every encoder, every field, every JavaScript type: an MqsecError, never a plain TypeError', () => {
    expect(wrongTypeCaseCount()).toBeGreaterThan(1000);
    expect(untypedEncodeFailures()).toEqual([]);
  });

  it('arbitrary values in place of a packet or a field: encodes or throws an MqsecError', () => {
    const anything = fc.oneof(fc.anything({ withTypedArray: true, withBigInt: true, withMap: true }), fc.constant(Symbol('s')));
    fc.assert(
      fc.property(anyPacket, fc.option(fc.string(), { nil: undefined }), anything, (p, key, v) => {
        const fields = Object.keys(p).filter((k) => k !== 'type');
        const field = key === undefined ? undefined : fields[key.length % fields.length];
        codeOf(() => encodePacket((field === undefined ? v : { ...p, [field]: v }) as MqttPacket));
      }),
      { numRuns: 2000 },
    );
  });

  it('typed codes: a wrong type is MALFORMED, an out-of-range number keeps its protocol code', () => {
    const pub = { type: 'publish', topic: 't', payload: new Uint8Array(0), qos: 0, dup: false, retain: false } as const;
    expect(codeOf(() => encodePacket(null as never))).toBe('MALFORMED');
    expect(codeOf(() => encodePacket({ ...pub, topic: 7 as never }))).toBe('MALFORMED');
    expect(codeOf(() => encodePacket({ ...pub, retain: 'yes' as never }))).toBe('MALFORMED');
    expect(codeOf(() => encodePacket({ type: 'subscribe', messageId: 1, subscriptions: 'a' as never }))).toBe('MALFORMED');
    expect(codeOf(() => encodePacket({ type: 'unsubscribe', messageId: 1, unsubscriptions: [null as never] }))).toBe('MALFORMED');
    expect(codeOf(() => encodePacket({ type: 'suback', messageId: 1, granted: [Symbol('g') as never] }))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => encodePacket({ type: 'puback', messageId: Symbol('id') as never }))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => encodePacket({ type: 'connect', clientId: 'a', cleanSession: true, keepalive: 1, will: 1 as never }))).toBe('MALFORMED');
  });
});
