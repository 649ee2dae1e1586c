/**
 * Suite 1 (X25519, HKDF-SHA256, HMAC-SHA256, ChaCha20-Poly1305) in portable
 * JavaScript on @noble/curves, @noble/hashes and @noble/ciphers. Runs under
 * Node and Moddable XS alike, and every module it imports can be preloaded
 * into flash by the Moddable linker (see ./x25519.ts for why X25519 is not
 * taken from @noble/curves/ed25519). Randomness is injected: XS has no
 * crypto.getRandomValues.
 */
import { x25519 } from './x25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { hmac } from '@noble/hashes/hmac.js';
import { extract, expand } from '@noble/hashes/hkdf.js';
import { chachaPolyOpen, chachaPolySeal } from './chacha20poly1305.js';
import { isAllZero } from '../core/bytes.js';
import { MqsecError, fail } from '../core/errors.js';
import type { Random } from '../core/platform.js';
import { SUITE1_PARAMETERS, type CryptoSuite, type KeyPair } from './suite.js';

export function createNobleSuite(random: Random): CryptoSuite {
  const randomBytes = (n: number): Uint8Array => {
    const b = new Uint8Array(n);
    random.fill(b);
    return b;
  };
  return {
    ...SUITE1_PARAMETERS,
    name: 'x25519-chacha20poly1305-sha256 (noble)',
    dhKeyPair(): KeyPair {
      const privateKey = randomBytes(32);
      // The Montgomery ladder from u = 9 (RFC 7748 section 6.1): no precomputed tables.
      return { privateKey, publicKey: x25519.getPublicKey(privateKey) };
    },
    dh(privateKey, peerPublicKey) {
      if (peerPublicKey.length !== 32) fail('BAD_KEY', 'X25519 public key must be 32 bytes');
      let z: Uint8Array;
      try {
        z = x25519.getSharedSecret(privateKey, peerPublicKey);
      } catch (e) {
        // noble throws on the all-zero shared secret (small-order point)
        throw new MqsecError('BAD_KEY', 'X25519 shared secret rejected');
      }
      if (isAllZero(z)) fail('BAD_KEY', 'X25519 shared secret is all zero');
      return z;
    },
    hash: (data) => sha256(data),
    hmac: (key, data) => hmac(sha256, key, data),
    hkdfExtract: (salt, ikm) => extract(sha256, ikm, salt),
    hkdfExpand: (prk, info, length) => expand(sha256, prk, info, length),
    aeadSeal: chachaPolySeal,
    aeadOpen: chachaPolyOpen,
    randomBytes,
  };
}
