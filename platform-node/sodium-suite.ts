/**
 * The broker's suite 1: each primitive from whichever Node-side library is
 * faster per call (`npx tsx bench/suites.ts`, bench/RESULTS.md "Crypto per
 * call"): X25519 (crypto_scalarmult) and ChaCha20-Poly1305 IETF (RFC 8439)
 * from libsodium through sodium-native (prebuilt, no compiler), SHA-256,
 * HMAC and HKDF from node:crypto.
 *
 * Why: the broker opens and re-seals every hop-by-hop message and runs
 * X25519 for every phase 1. node:crypto builds a new OpenSSL cipher object
 * per AEAD call (most of its 5-7 µs for 64 B) and imports raw X25519 keys
 * through KeyObjects; libsodium works on the bytes directly (about 1.5 µs per
 * 64 B seal or open, half the X25519 time). For HMAC/HKDF, OpenSSL's HMAC in
 * one call beats HMAC composed in JavaScript over libsodium's SHA-256, so
 * those stay on node:crypto. The X25519 checks (all-zero shared secret, key
 * lengths) come from the generic mechanism (firmware/crypto/compose.ts).
 * Cross-tested byte for byte against the noble and node:crypto suites and
 * the RFC vectors (test/secure/crypto-suites.test.ts).
 */
import { createRequire } from 'node:module';
import { composeSuite1, type Sha256 } from '../firmware/crypto/compose.js';
import type { Random } from '../firmware/core/platform.js';
import type { CryptoSuite } from '../firmware/crypto/suite.js';
import { createNodeCryptoSuite } from './crypto-suite.js';
import { nodeRandom } from './random.js';

interface Sodium {
  crypto_scalarmult(q: Uint8Array, n: Uint8Array, p: Uint8Array): void;
  crypto_hash_sha256_init(state: Uint8Array): void;
  crypto_hash_sha256_update(state: Uint8Array, input: Uint8Array): void;
  crypto_hash_sha256_final(state: Uint8Array, out: Uint8Array): void;
  crypto_hash_sha256_STATEBYTES: number;
  crypto_aead_chacha20poly1305_ietf_encrypt(c: Uint8Array, m: Uint8Array, ad: Uint8Array | null, nsec: null, npub: Uint8Array, k: Uint8Array): number;
  crypto_aead_chacha20poly1305_ietf_decrypt(m: Uint8Array, nsec: null, c: Uint8Array, ad: Uint8Array | null, npub: Uint8Array, k: Uint8Array): number;
}

// sodium-native is a CommonJS addon loader; createRequire keeps this module ESM. Loaded on
// first use, not at import: a broker that fails to start (port taken) never pays for it.
let loaded: Sodium | undefined;
const lib = (): Sodium => (loaded ??= createRequire(import.meta.url)('sodium-native') as Sodium);

/** libsodium wants Buffers or plain Uint8Arrays; subarray views work as they are. */
function sodiumSha256(): Sha256 {
  // One state buffer reused: hashing is synchronous, so calls never interleave.
  let state: Uint8Array | undefined;
  return (...parts) => {
    const sodium = lib();
    state ??= new Uint8Array(sodium.crypto_hash_sha256_STATEBYTES);
    sodium.crypto_hash_sha256_init(state);
    for (const part of parts) sodium.crypto_hash_sha256_update(state, part);
    const out = new Uint8Array(32);
    sodium.crypto_hash_sha256_final(state, out);
    return out;
  };
}

export function createSodiumSuite(random: Random = nodeRandom): CryptoSuite {
  const openssl = createNodeCryptoSuite(random);
  const sodiumOnly = composeSuite1({
    name: 'x25519-chacha20poly1305-sha256 (libsodium)',
    x25519(scalar, u) {
      const out = new Uint8Array(32);
      // libsodium clamps the scalar and ignores the top bit of u (RFC 7748 §5); it throws on an
      // all-zero result (low-order u), which composeSuite1 reports as BAD_KEY.
      lib().crypto_scalarmult(out, scalar, u);
      return out;
    },
    sha256: sodiumSha256(),
    aeadSeal(key, nonce, plaintext, aad) {
      const out = new Uint8Array(plaintext.length + 16);
      lib().crypto_aead_chacha20poly1305_ietf_encrypt(out, plaintext, aad, null, nonce, key);
      return out;
    },
    aeadOpen(key, nonce, sealed, aad) {
      const out = new Uint8Array(sealed.length - 16);
      try {
        lib().crypto_aead_chacha20poly1305_ietf_decrypt(out, null, sealed, aad, nonce, key);
      } catch {
        return undefined; // tag mismatch: sodium-native throws
      }
      return out;
    },
    random,
  });
  return {
    ...sodiumOnly,
    name: 'x25519-chacha20poly1305 (libsodium), sha256/hmac/hkdf (node:crypto)',
    hash: openssl.hash,
    hmac: openssl.hmac,
    hkdfExtract: openssl.hkdfExtract,
    hkdfExpand: openssl.hkdfExpand,
  };
}
