/**
 * A device-friendly key generation for the noble suite.
 *
 * @noble/curves 2.x computes an X25519 public key ([k]B) on the Edwards form
 * with cached base-point tables (ed25519 Point.BASE precomputes, the
 * libsodium construction): about 3x faster, but the first call builds the
 * tables and keeps them for the life of the program. Measured inside XS
 * (test/moddable/memory.xs.test.ts) that is about 7,000 live slots, i.e.
 * ~110 KB on an ESP32 (16-byte slots), most of the ~150 KB a typical
 * Moddable build leaves for JavaScript.
 *
 * The plain Montgomery ladder (RFC 7748 section 5, the same code noble uses
 * for the shared secret) gives byte-identical public keys with no tables, so
 * the device uses it for key generation. The broker keeps the fast path.
 */
import { x25519 } from '@noble/curves/ed25519.js';
import type { CryptoSuite, KeyPair } from '../crypto/suite.js';

/** The X25519 base point, u = 9 (RFC 7748 section 4.1), little-endian. */
function basePointU(): Uint8Array {
  const u = new Uint8Array(32);
  u[0] = 9;
  return u;
}

export function withLadderKeyGeneration(suite: CryptoSuite): CryptoSuite {
  return {
    ...suite,
    name: `${suite.name}, ladder key generation`,
    dhKeyPair(): KeyPair {
      const privateKey = suite.randomBytes(32);
      return { privateKey, publicKey: x25519.scalarMult(privateKey, basePointU()) };
    },
  };
}
