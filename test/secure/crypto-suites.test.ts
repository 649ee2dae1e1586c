/**
 * The CryptoSuite implementations against RFC known-answer vectors and
 * against each other: noble (host simulator, XS tests), node:crypto and
 * libsodium (broker; the faster serves, bench/RESULTS.md),
 * and the generic composeSuite1 (HMAC and HKDF of its own over a streamed
 * SHA-256), the mechanism the device's native suite supplies primitives to;
 * here with a node:crypto SHA-256 and the ladder X25519, so its HMAC/HKDF
 * are checked against two independent implementations.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import { isMqsecError } from '../../firmware/core/errors.js';
import { utf8Encode } from '../../firmware/core/utf8.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { hkdf, type CryptoSuite } from '../../firmware/crypto/suite.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { createSodiumSuite } from '../../platform-node/sodium-suite.js';
import { createHash } from 'node:crypto';
import { composeSuite1, hkdfExpandSha256, hmacSha256, type Sha256 } from '../../firmware/crypto/compose.js';
import { x25519 } from '../../firmware/crypto/x25519.js';
import { chachaPolyOpen, chachaPolySeal } from '../../firmware/crypto/chacha20poly1305.js';
import { cryptoSelfTest } from '../../firmware/crypto/self-test.js';

const nodeSha256: Sha256 = (...parts) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};
const createComposedSuite = (random: { fill(b: Uint8Array): void }) =>
  composeSuite1({ name: 'composed (test)', x25519: (k, u) => x25519.scalarMult(k, u), sha256: nodeSha256, aeadSeal: chachaPolySeal, aeadOpen: chachaPolyOpen, random });
import { LOW_ORDER_POINTS, seededRandom } from './helpers.js';

const fixedRandom = (hex: string) => ({ fill: (b: Uint8Array) => b.set(fromHex(hex).subarray(0, b.length)) });
const suites: [string, (r: { fill(b: Uint8Array): void }) => CryptoSuite][] = [
  ['noble', createNobleSuite],
  ['node:crypto', createNodeCryptoSuite],
  ['composed', createComposedSuite],
  ['libsodium', createSodiumSuite],
];


describe.each(suites)('%s suite: RFC known answers', (_name, make) => {
  it('X25519 RFC 7748 §5.2 scalar multiplication', () => {
    const s = make(fixedRandom('00'));
    expect(toHex(s.dh(fromHex('a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4'), fromHex('e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c')))).toBe(
      'c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552',
    );
  });

  it('X25519 RFC 7748 §6.1 Diffie-Hellman', () => {
    const alicePriv = '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a';
    const bobPriv = '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb';
    const a = make(fixedRandom(alicePriv)).dhKeyPair();
    const b = make(fixedRandom(bobPriv)).dhKeyPair();
    expect(toHex(a.publicKey)).toBe('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
    expect(toHex(b.publicKey)).toBe('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
    const k = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
    const s = make(fixedRandom('00'));
    expect(toHex(s.dh(a.privateKey, b.publicKey))).toBe(k);
    expect(toHex(s.dh(b.privateKey, a.publicKey))).toBe(k);
  });

  it('X25519 rejects every low-order point with BAD_KEY', () => {
    const s = make(seededRandom('low'));
    const kp = s.dhKeyPair();
    for (const p of LOW_ORDER_POINTS) {
      let err: unknown;
      try {
        s.dh(kp.privateKey, fromHex(p));
      } catch (e) {
        err = e;
      }
      expect(isMqsecError(err, 'BAD_KEY'), p).toBe(true);
    }
    expect(() => s.dh(kp.privateKey, new Uint8Array(31))).toThrow(/BAD_KEY/);
  });

  it('ChaCha20-Poly1305 RFC 8439 §2.8.2', () => {
    const s = make(fixedRandom('00'));
    const key = fromHex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f');
    const nonce = fromHex('070000004041424344454647');
    const aad = fromHex('50515253c0c1c2c3c4c5c6c7');
    const pt = utf8Encode("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
    const sealed = s.aeadSeal(key, nonce, pt, aad);
    expect(toHex(sealed)).toBe(
      'd31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116' +
        '1ae10b594f09e26a7e902ecbd0600691',
    );
    expect(s.aeadOpen(key, nonce, sealed, aad)).toEqual(pt);
    const bad = sealed.slice();
    bad[bad.length - 1] ^= 1;
    expect(s.aeadOpen(key, nonce, bad, aad)).toBeUndefined();
    expect(s.aeadOpen(key, nonce, sealed, new Uint8Array(0))).toBeUndefined();
    expect(s.aeadOpen(key, nonce, sealed.subarray(0, 15), aad)).toBeUndefined();
  });

  it('HKDF-SHA256 RFC 5869 A.1 and A.3', () => {
    const s = make(fixedRandom('00'));
    const ikm = new Uint8Array(22).fill(0x0b);
    const prk = s.hkdfExtract(fromHex('000102030405060708090a0b0c'), ikm);
    expect(toHex(prk)).toBe('077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5');
    expect(toHex(s.hkdfExpand(prk, fromHex('f0f1f2f3f4f5f6f7f8f9'), 42))).toBe(
      '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865',
    );
    const prk3 = s.hkdfExtract(new Uint8Array(0), ikm);
    expect(toHex(prk3)).toBe('19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04');
    expect(toHex(hkdf(s, new Uint8Array(0), ikm, new Uint8Array(0), 42))).toBe(
      '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8',
    );
  });
});

describe.each([
  ['node:crypto', createNodeCryptoSuite],
  ['libsodium', createSodiumSuite],
] as const)('noble and %s suites give identical bytes', (_name, makeOther) => {
  const bytes = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max });
  it('key pairs and X25519', () => {
    fc.assert(
      fc.property(bytes(32, 32), bytes(32, 32), (a, b) => {
        const n1 = createNobleSuite(fixedRandom(toHex(a)));
        const o1 = makeOther(fixedRandom(toHex(a)));
        const ka = n1.dhKeyPair();
        expect(o1.dhKeyPair().publicKey).toEqual(ka.publicKey);
        const kb = createNobleSuite(fixedRandom(toHex(b))).dhKeyPair();
        expect(o1.dh(ka.privateKey, kb.publicKey)).toEqual(n1.dh(ka.privateKey, kb.publicKey));
      }),
      { numRuns: 40 },
    );
  });
  it('hash, HMAC, HKDF', () => {
    const n = createNobleSuite(fixedRandom('00'));
    const o = makeOther(fixedRandom('00'));
    fc.assert(
      fc.property(bytes(0, 100), bytes(0, 80), bytes(0, 40), fc.integer({ min: 1, max: 200 }), (k, d, info, len) => {
        expect(o.hash(d)).toEqual(n.hash(d));
        expect(o.hmac(k, d)).toEqual(n.hmac(k, d));
        expect(o.hkdfExtract(k, d)).toEqual(n.hkdfExtract(k, d));
        expect(o.hkdfExpand(n.hkdfExtract(k, d), info, len)).toEqual(n.hkdfExpand(n.hkdfExtract(k, d), info, len));
      }),
      { numRuns: 100 },
    );
  });
  it('AEAD seal/open both ways', () => {
    const n = createNobleSuite(fixedRandom('00'));
    const o = makeOther(fixedRandom('00'));
    fc.assert(
      fc.property(bytes(32, 32), bytes(12, 12), bytes(0, 300), bytes(0, 40), (k, nonce, pt, aad) => {
        const a = n.aeadSeal(k, nonce, pt, aad);
        expect(o.aeadSeal(k, nonce, pt, aad)).toEqual(a);
        expect(o.aeadOpen(k, nonce, a, aad)).toEqual(pt);
        expect(n.aeadOpen(k, nonce, a, aad)).toEqual(pt);
      }),
      { numRuns: 100 },
    );
  });
});

describe('composeSuite1 (generic HMAC/HKDF over a streamed hash)', () => {
  const bytes = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max });
  it('matches node:crypto for HMAC (keys shorter and longer than the block) and HKDF', () => {
    const c = createComposedSuite(fixedRandom('00'));
    const o = createNodeCryptoSuite(fixedRandom('00'));
    fc.assert(
      fc.property(bytes(0, 150), bytes(0, 200), bytes(0, 40), fc.integer({ min: 0, max: 300 }), (k, d, info, len) => {
        expect(c.hash(d)).toEqual(o.hash(d));
        expect(c.hmac(k, d)).toEqual(o.hmac(k, d));
        const prk = o.hkdfExtract(k, d);
        expect(c.hkdfExtract(k, d)).toEqual(prk);
        expect(c.hkdfExpand(prk, info, len)).toEqual(o.hkdfExpand(prk, info, len));
      }),
      { numRuns: 150 },
    );
  });

  it('RFC 4231 test case 6: a key longer than the block is hashed first', () => {
    const key = new Uint8Array(131).fill(0xaa);
    const msg = utf8Encode('Test Using Larger Than Block-Size Key - Hash Key First');
    expect(toHex(hmacSha256(nodeSha256, key, msg))).toBe('60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54');
  });

  it('HKDF refuses lengths over 255 * HashLen and a short PRK', () => {
    expect(() => hkdfExpandSha256(nodeSha256, new Uint8Array(32), new Uint8Array(0), 255 * 32 + 1)).toThrow(/MALFORMED/);
    expect(hkdfExpandSha256(nodeSha256, new Uint8Array(32), new Uint8Array(0), 255 * 32)).toHaveLength(8160);
    expect(() => hkdfExpandSha256(nodeSha256, new Uint8Array(16), new Uint8Array(0), 32)).toThrow(/MALFORMED/);
  });

  it('a failing X25519 primitive surfaces as BAD_KEY, and keys of the wrong length are refused', () => {
    const c = composeSuite1({ name: 'broken', x25519: () => { throw new Error('boom'); }, sha256: nodeSha256, aeadSeal: chachaPolySeal, aeadOpen: chachaPolyOpen, random: fixedRandom('00') });
    expect(() => c.dh(new Uint8Array(32), new Uint8Array(32).fill(9))).toThrow(/BAD_KEY/);
    const ok = createComposedSuite(fixedRandom('00'));
    expect(() => ok.dh(new Uint8Array(31), new Uint8Array(32).fill(9))).toThrow(/BAD_KEY/);
  });
});

describe('power-on crypto self-test', () => {
  it.each(suites)('%s suite passes', (_name, make) => {
    expect(() => cryptoSelfTest(make(fixedRandom('00')))).not.toThrow();
  });

  it('stops on any wrong primitive with INTERNAL and names it', () => {
    const good = createComposedSuite(fixedRandom('00'));
    const broken: [string, Partial<CryptoSuite>, RegExp][] = [
      ['x25519', { dh: (k, u) => { const z = good.dh(k, u); z[0] ^= 1; return z; } }, /X25519/],
      ['hash', { hash: (d) => { const h = good.hash(d); h[31] ^= 1; return h; } }, /SHA-256/],
      ['hmac', { hmac: (k, d) => good.hmac(d, k) }, /HMAC/],
      ['hkdf', { hkdfExpand: (p, i, l) => good.hkdfExpand(p, i, l).reverse() }, /HKDF/],
      ['aead seal', { aeadSeal: (k, n, p, a) => good.aeadSeal(k, n, p, new Uint8Array(0)) }, /AEAD round trip/],
      ['aead forgery', { aeadOpen: (k, n, c, a) => good.aeadOpen(k, n, c, a) ?? new Uint8Array(5) }, /forged tag/],
    ];
    for (const [what, patch, message] of broken) {
      let err: unknown;
      try {
        cryptoSelfTest({ ...good, ...patch });
      } catch (e) {
        err = e;
      }
      expect(isMqsecError(err, 'INTERNAL'), what).toBe(true);
      expect((err as Error).message, what).toMatch(message);
    }
  });
});
