/**
 * X25519 (RFC 7748) as parameters for noble's generic Montgomery-ladder
 * mechanism, `@noble/curves/abstract/montgomery`: this file only supplies
 * the curve25519 field prime, the scalar clamping and a fast field inversion.
 *
 * Why not `@noble/curves/ed25519`'s ready-made `x25519`: that module also
 * defines Ed25519, Ristretto, FROST and hash-to-curve, and computes public
 * keys with Edwards base-point tables cached on first use. On a device that
 * is tens of kilobytes of module code to keep in RAM (the module cannot be
 * preloaded into flash: it encodes strings with TextEncoder while loading)
 * and ~7,000 XS slots (~110 KB on an ESP32) of tables. This file, the ladder
 * and its helpers are preloadable, and public keys come from the same ladder
 * used for shared secrets: byte-identical results (test/crypto/x25519.test.ts
 * checks RFC 7748 section 5.2 and 6.1 vectors and random keys against
 * `@noble/curves/ed25519` and node:crypto).
 */
import { montgomery } from '@noble/curves/abstract/montgomery.js';
import { pow2 } from '@noble/curves/abstract/modular.js';

/** RFC 7748 section 4.1: "p  2^255 - 19". */
const P = 2n ** 255n - 19n;

/**
 * RFC 7748 section 5, decodeScalar25519: "k_list[0] &= 248; k_list[31] &= 127;
 * k_list[31] |= 64". noble hands over a private copy, so clamping in place is safe.
 */
function clampScalar(k: Uint8Array): Uint8Array {
  k[0] &= 248;
  k[31] &= 127;
  k[31] |= 64;
  return k;
}

/**
 * x^(p-2) mod p, i.e. 1/x by Fermat, with the usual curve25519 addition chain
 * (254 squarings, 11 multiplications): the ladder's single inversion. Each
 * b_n below is x^(2^n - 1).
 */
function invertByFermat(x: bigint): bigint {
  const m = (a: bigint, b: bigint) => (a * b) % P;
  const sq = (a: bigint, n: bigint) => pow2(a, n, P);
  const b2 = m(m(x, x), x); // x^3
  const b4 = m(sq(b2, 2n), b2); // x^15
  const b5 = m(sq(b4, 1n), x);
  const b10 = m(sq(b5, 5n), b5);
  const b20 = m(sq(b10, 10n), b10);
  const b40 = m(sq(b20, 20n), b20);
  const b80 = m(sq(b40, 40n), b40);
  const b160 = m(sq(b80, 80n), b80);
  const b240 = m(sq(b160, 80n), b80);
  const b250 = m(sq(b240, 10n), b10);
  const x2252m3 = m(sq(b250, 2n), x); // x^(2^252 - 3)
  return m(sq(x2252m3, 3n), b2); // x^(8 * (2^252 - 3) + 3) = x^(2^255 - 21) = x^(p - 2)
}

/**
 * Keys never come from ambient randomness: every X_d is a fresh key pair
 * (docs/protocol.md §5.1) drawn from the injected platform Random by the
 * suite (XS has no crypto.getRandomValues). A call here is a bug.
 */
function noAmbientRandomness(): Uint8Array {
  throw new Error('mqsec: X25519 keys are generated from the injected Random');
}

export const x25519 = montgomery({
  P,
  type: 'x25519',
  adjustScalarBytes: clampScalar,
  powPminus2: invertByFermat,
  randomBytes: noAmbientRandomness,
});
