/**
 * firmware/crypto/x25519.ts: X25519 from noble's generic Montgomery ladder
 * with mqsec's own parameters (the device's only X25519), checked against
 * RFC 7748 and against two independent implementations: the ready-made
 * `x25519` of @noble/curves/ed25519 (Edwards tables for public keys) and
 * OpenSSL through node:crypto.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { x25519 as edwardsX25519 } from '@noble/curves/ed25519.js';
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import { x25519 } from '../../firmware/crypto/x25519.js';
import { LOW_ORDER_POINTS, opensslX25519 } from './helpers.js';


describe('X25519 (firmware/crypto/x25519.ts)', () => {
  it('RFC 7748 section 5.2: the two single scalar multiplications', () => {
    expect(toHex(x25519.scalarMult(fromHex('a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4'), fromHex('e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c')))).toBe(
      'c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552',
    );
    expect(toHex(x25519.scalarMult(fromHex('4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d'), fromHex('e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493')))).toBe(
      '95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957',
    );
  });

  it('RFC 7748 section 5.2: 1,000 iterations of k, u = X25519(k, u), k', () => {
    let k: Uint8Array = fromHex('0900000000000000000000000000000000000000000000000000000000000000');
    let u: Uint8Array = k.slice();
    for (let i = 1; i <= 1000; i++) {
      const next = x25519.scalarMult(k, u);
      u = k;
      k = next;
      if (i === 1) expect(toHex(k)).toBe('422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079');
    }
    expect(toHex(k)).toBe('684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51');
  });

  it('RFC 7748 section 6.1: public keys from the ladder and the shared secret', () => {
    const alice = fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
    const bob = fromHex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
    const alicePub = x25519.getPublicKey(alice);
    const bobPub = x25519.getPublicKey(bob);
    expect(toHex(alicePub)).toBe('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
    expect(toHex(bobPub)).toBe('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
    const k = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
    expect(toHex(x25519.getSharedSecret(alice, bobPub))).toBe(k);
    expect(toHex(x25519.getSharedSecret(bob, alicePub))).toBe(k);
  });

  it('agrees with @noble/curves/ed25519 and with OpenSSL on random keys, including non-canonical u', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), (a, b) => {
        const pub = x25519.getPublicKey(a);
        expect(pub).toEqual(edwardsX25519.getPublicKey(a));
        const peer = x25519.getPublicKey(b);
        const shared = x25519.getSharedSecret(a, peer);
        expect(shared).toEqual(edwardsX25519.getSharedSecret(a, peer));
        expect(shared).toEqual(opensslX25519(a, peer));
        expect(shared).toEqual(x25519.getSharedSecret(b, pub));
        // RFC 7748 section 5: the top bit of u is masked, values >= p are reduced
        const highBit = peer.slice();
        highBit[31] |= 0x80;
        expect(x25519.getSharedSecret(a, highBit)).toEqual(shared);
      }),
      { numRuns: 60 },
    );
  });

  it('refuses low-order points before running the ladder, and wrong lengths', () => {
    const k = new Uint8Array(32).fill(7);
    for (const p of LOW_ORDER_POINTS) expect(() => x25519.getSharedSecret(k, fromHex(p)), p).toThrow();
    expect(() => x25519.getSharedSecret(k, new Uint8Array(31))).toThrow();
    expect(() => x25519.getPublicKey(new Uint8Array(33))).toThrow();
  });

  it('never draws ambient randomness', () => {
    expect(() => x25519.keygen()).toThrow(/injected Random/);
  });
});
