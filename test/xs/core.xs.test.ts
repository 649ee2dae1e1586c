/**
 * firmware/core and the noble CryptoSuite inside the real XS engine, compared
 * byte for byte with the same code under Node.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fc from 'fast-check';
import { startXs, type XsWorker } from './harness.js';
import { utf8Encode } from '../../firmware/core/utf8.js';
import { encodeRemainingLength, encodeVarint } from '../../firmware/core/varint.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { hkdf } from '../../firmware/crypto/suite.js';
import { x25519 } from '../../firmware/crypto/x25519.js';

const x25519Scalar = (k: Uint8Array, u: Uint8Array) => x25519.scalarMult(k, u);
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import { isCharsOf, isHexDigit, isIdChar, isIpv4Literal } from '../../firmware/core/ascii.js';

const suite = createNobleSuite({ fill: () => { throw new Error('no randomness needed'); } });
let xs: XsWorker;

beforeAll(async () => {
  xs = await startXs(new URL('./entries/core.entry.ts', import.meta.url));
});
afterAll(async () => {
  await xs?.close();
});

describe('firmware/core under XS', () => {
  it('really runs inside XS (no Node globals)', async () => {
    expect(await xs.call('engine')).toEqual({ hasProcess: false, hasPrint: true, hasBuffer: false });
  });

  it('ASCII charset checks give the same answers as under Node', async () => {
    const strings = ['sensor-01', 'a.b_c-d', '', 'x'.repeat(24), 'é', 'bad id', '00ff', 'ABCDEFabcdef0123456789', '0g', '127.0.0.1', '255.255.255.255', '256.1.1.1', '01.2.3.4', '1.2.3', 'a/b', '+', '#', '\u0000'];
    const expected = strings.map((s) => [isCharsOf(s, 1, 23, isIdChar), isCharsOf(s, 0, 64, isHexDigit), isIpv4Literal(s)]);
    expect(await xs.call('ascii', strings)).toEqual(expected);
  });

  it('X25519 ladder: RFC 7748 section 5.2 after 1 and 100 iterations, as under Node', async () => {
    expect(toHex(await xs.call('x25519Iterate', 1))).toBe('422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079');
    const node = (() => {
      // the RFC gives 1 and 1,000 iterations; 100 keeps XS time low and is compared with Node
      let k: Uint8Array = fromHex('09' + '00'.repeat(31));
      let u: Uint8Array = k.slice();
      for (let i = 0; i < 100; i++) [u, k] = [k, x25519Scalar(k, u)];
      return k;
    })();
    expect(await xs.call('x25519Iterate', 100)).toEqual(node);
  });

  it('power-on self-test passes in XS for the noble suite and the composed (device) mechanism', async () => {
    expect(await xs.call('selfTest')).toBe(true);
  });

  it('composed HMAC and HKDF (the device suite mechanism) give Node\'s bytes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 100 }), fc.uint8Array({ maxLength: 120 }), fc.uint8Array({ maxLength: 20 }), fc.integer({ min: 1, max: 100 }), async (k, d, info, len) => {
        expect(await xs.call('composedHmac', k, d)).toEqual(suite.hmac(k, d));
        expect(await xs.call('composedHkdf', k, d, info, len)).toEqual(hkdf(suite, k, d, info, len));
      }),
      { numRuns: 25 },
    );
  });

  it('UTF-8 encodes like Node and rejects the same invalid input', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: 'binary', maxLength: 40 }), async (s) => {
        expect(await xs.call('utf8Encode', s)).toEqual(utf8Encode(s));
      }),
      { numRuns: 50 },
    );
    expect(await xs.call('utf8Decode', new Uint8Array([0xc0, 0x80]))).toEqual({ code: 'INVALID_UTF8' });
    expect(await xs.call('utf8Decode', new Uint8Array([0xed, 0xa0, 0x80]))).toEqual({ code: 'INVALID_UTF8' });
    expect(await xs.call('utf8Decode', new Uint8Array([0x61, 0x00]))).toEqual({ code: 'INVALID_UTF8' });
    expect(await xs.call('utf8Decode', new Uint8Array([0xe2, 0x82]))).toEqual({ code: 'INVALID_UTF8' });
    expect(await xs.call('utf8Decode', utf8Encode('sensors/é/😀'))).toEqual({ ok: 'sensors/é/😀' });
  });

  it('varints round-trip like Node', async () => {
    for (const n of [0, 1, 127, 128, 16383, 16384, 2097151, 268435455]) {
      const r = await xs.call('remainingLength', n);
      expect(r.enc).toEqual(encodeRemainingLength(n));
      expect(r.dec).toEqual({ value: n, length: r.enc.length });
    }
    for (const n of [0, 300, 2 ** 32 + 5, 2 ** 48 - 1]) {
      const r = await xs.call('varint', n);
      expect(r.enc).toEqual(encodeVarint(n));
      expect(r.dec.value).toBe(n);
      expect(await xs.call('u48', n)).toBe(n);
    }
  });

  it('constant-time equality agrees', async () => {
    expect(await xs.call('ctEqual', new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(true);
    expect(await xs.call('ctEqual', new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
    expect(await xs.call('ctEqual', new Uint8Array([1]), new Uint8Array([1, 2]))).toBe(false);
  });

  it('async guest functions settle through the poll channel', async () => {
    expect(await xs.call('asyncEcho', { a: new Uint8Array([7]) })).toEqual({ a: new Uint8Array([7]) });
  });
});

describe('noble CryptoSuite under XS', () => {
  it('RFC 7748 section 6.1 X25519 test vector', async () => {
    const alicePriv = fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
    const bobPub = fromHex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
    const shared = fromHex('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');
    expect(await xs.call('dh', alicePriv, bobPub)).toEqual({ ok: shared });
    expect(suite.dh(alicePriv, bobPub)).toEqual(shared);
  });

  it('rejects a small-order public key (all-zero shared secret) with BAD_KEY', async () => {
    const priv = fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
    expect(await xs.call('dh', priv, new Uint8Array(32))).toEqual({ code: 'BAD_KEY' });
    expect(() => suite.dh(priv, new Uint8Array(32))).toThrow(/BAD_KEY/);
  });

  it('RFC 5869 test case 1 (HKDF-SHA256)', async () => {
    const ikm = fromHex('0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b');
    const salt = fromHex('000102030405060708090a0b0c');
    const info = fromHex('f0f1f2f3f4f5f6f7f8f9');
    const okm = fromHex('3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
    expect(await xs.call('hkdf', salt, ikm, info, 42)).toEqual(okm);
    expect(hkdf(suite, salt, ikm, info, 42)).toEqual(okm);
  });

  it('HMAC and AEAD give Node-identical bytes and fail closed on tampering', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 12, maxLength: 12 }),
        fc.uint8Array({ maxLength: 200 }),
        fc.uint8Array({ maxLength: 40 }),
        async (key, nonce, pt, aad) => {
          expect(await xs.call('hmac', key, pt)).toEqual(suite.hmac(key, pt));
          const sealed = await xs.call<Uint8Array>('seal', key, nonce, pt, aad);
          expect(sealed).toEqual(suite.aeadSeal(key, nonce, pt, aad));
          expect(await xs.call('open', key, nonce, sealed, aad)).toEqual(pt);
          const bad = sealed.slice();
          bad[bad.length - 1] ^= 1;
          expect(await xs.call('open', key, nonce, bad, aad)).toBeNull();
        },
      ),
      { numRuns: 25 },
    );
  });

  it('draws randomness from the injected host source', async () => {
    expect(await xs.call('randomLen', 32)).toBe(32);
  });
});

describe('harness channel', () => {
  it('carries large messages (64 KiB) both ways', async () => {
    const big = new Uint8Array(65536).map((_, i) => i & 0xff);
    expect(await xs.call('asyncEcho', big)).toEqual(big);
  });
});
