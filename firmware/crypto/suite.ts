/**
 * The CryptoSuite interface: everything firmware/secure needs from
 * cryptography, behind one small synchronous interface, so the device can use
 * portable JS (@noble/*), a native Moddable/ESP-IDF module later, and the
 * broker node:crypto, all cross-tested to give identical bytes.
 *
 * A suite is a generic mechanism plus parameters, like noble's
 * abstract/montgomery.ts: suite files only supply primitives.
 */
export interface KeyPair {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
}

export interface CryptoSuite {
  /** Suite identifier carried on the wire (docs/protocol.md, "Suites"). */
  readonly id: number;
  readonly name: string;
  /** Lengths in bytes. */
  readonly dhPublicLength: number;
  readonly hashLength: number;
  readonly aeadKeyLength: number;
  readonly aeadNonceLength: number;
  readonly aeadTagLength: number;

  /** Fresh ephemeral key pair from the injected Random. */
  dhKeyPair(): KeyPair;
  /**
   * Shared secret. MUST fail (throw MqsecError BAD_KEY) when the result is
   * all zeros: RFC 7748 section 6.1 "Both [parties] MAY check, without leaking
   * extra information about the value of K, whether K is the all-zero value
   * and abort if so" -- mqsec makes this check mandatory (small-order points).
   */
  dh(privateKey: Uint8Array, peerPublicKey: Uint8Array): Uint8Array;
  hash(data: Uint8Array): Uint8Array;
  hmac(key: Uint8Array, data: Uint8Array): Uint8Array;
  /** RFC 5869 HKDF-Extract / HKDF-Expand with the suite's hash. */
  hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Uint8Array;
  hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array;
  /** AEAD seal: returns ciphertext || tag. */
  aeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array;
  /** AEAD open: returns plaintext, or undefined when the tag does not verify (never throws for a bad tag). */
  aeadOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | undefined;
  /** n random bytes from the injected Random. */
  randomBytes(n: number): Uint8Array;
}

export const SUITE_X25519_CHACHAPOLY_SHA256 = 1;
/**
 * Suite 1's identifier and sizes (X25519, ChaCha20-Poly1305, SHA-256), shared by
 * every implementation of it so they cannot drift apart.
 */
export const SUITE1_PARAMETERS = Object.freeze({
  id: SUITE_X25519_CHACHAPOLY_SHA256,
  dhPublicLength: 32,
  hashLength: 32,
  aeadKeyLength: 32,
  aeadNonceLength: 12,
  aeadTagLength: 16,
});
/** Reserved: P-256 + AES-128-GCM + SHA-256 (ESP32 hardware-accelerated), not yet implemented. */
export const SUITE_P256_AESGCM_SHA256 = 2;

/** HKDF (RFC 5869) in one call. */
export function hkdf(suite: CryptoSuite, salt: Uint8Array, ikm: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  const prk = suite.hkdfExtract(salt, ikm);
  const out = suite.hkdfExpand(prk, info, length);
  prk.fill(0);
  return out;
}
