/**
 * AEAD_CHACHA20_POLY1305 (RFC 8439) from @noble/ciphers, in the shape the
 * suites use: seal returns ciphertext | tag, open returns undefined (never
 * throws) when the tag does not verify. Shared by the noble suite and the
 * device's native suite (the Moddable SDK has a ChaCha20 stream cipher but no
 * Poly1305).
 */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';

export function chachaPolySeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  return chacha20poly1305(key, nonce, aad).encrypt(plaintext);
}

export function chachaPolyOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | undefined {
  if (sealed.length < 16) return undefined;
  try {
    return chacha20poly1305(key, nonce, aad).decrypt(sealed);
  } catch {
    return undefined; // the tag did not verify (noble compares it in constant time)
  }
}
