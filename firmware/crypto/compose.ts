/**
 * Suite 1 assembled from primitives: a generic mechanism that turns an
 * X25519 scalar multiplication, a SHA-256 and a ChaCha20-Poly1305 into a
 * CryptoSuite, adding HMAC (RFC 2104) and HKDF (RFC 5869) on top of the hash
 * and the checks the protocol requires of every suite. Thin parameter files
 * supply the primitives, e.g. firmware/platform/moddable/native-suite.ts
 * (native X25519 and the SDK's native SHA-256 on the device).
 *
 * docs/protocol.md §2.3: suite 1 is X25519, HKDF-SHA256, HMAC-SHA256,
 * ChaCha20-Poly1305.
 */
import { isAllZero } from '../core/bytes.js';
import { MqsecError, fail } from '../core/errors.js';
import type { Random } from '../core/platform.js';
import { SUITE1_PARAMETERS, type CryptoSuite, type KeyPair } from './suite.js';

/** SHA-256 over the concatenation of `parts` (streamed, nothing concatenated). */
export type Sha256 = (...parts: Uint8Array[]) => Uint8Array;

export interface Suite1Primitives {
  name: string;
  /** RFC 7748 X25519(k, u): clamps k, masks the top bit of u, returns the 32-byte u-coordinate. */
  x25519(scalar: Uint8Array, u: Uint8Array): Uint8Array;
  sha256: Sha256;
  /** RFC 8439 AEAD_CHACHA20_POLY1305: seal returns ciphertext | tag; open returns undefined when the tag fails. */
  aeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array;
  aeadOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | undefined;
  random: Random;
}

const SHA256_BLOCK = 64;
const SHA256_OUT = 32;

/** The X25519 base point, u = 9 (RFC 7748 section 4.1). */
function basePoint(): Uint8Array {
  const u = new Uint8Array(32);
  u[0] = 9;
  return u;
}

/**
 * RFC 2104: HMAC(K, m) = H((K0 ^ opad) | H((K0 ^ ipad) | m)), where K0 is K
 * zero-padded to the block size, or H(K) zero-padded "if the key is longer
 * than the block size".
 */
export function hmacSha256(sha256: Sha256, key: Uint8Array, data: Uint8Array): Uint8Array {
  const k0 = new Uint8Array(SHA256_BLOCK);
  if (key.length > SHA256_BLOCK) {
    const hk = sha256(key);
    k0.set(hk);
    hk.fill(0);
  } else {
    k0.set(key);
  }
  const pad = new Uint8Array(SHA256_BLOCK);
  for (let i = 0; i < SHA256_BLOCK; i++) pad[i] = k0[i] ^ 0x36;
  const inner = sha256(pad, data);
  for (let i = 0; i < SHA256_BLOCK; i++) pad[i] = k0[i] ^ 0x5c;
  const mac = sha256(pad, inner);
  k0.fill(0);
  pad.fill(0);
  inner.fill(0);
  return mac;
}

/** RFC 5869 section 2.2: PRK = HMAC-Hash(salt, IKM); "if not provided, [salt] is set to a string of HashLen zeros". */
export function hkdfExtractSha256(sha256: Sha256, salt: Uint8Array, ikm: Uint8Array): Uint8Array {
  return hmacSha256(sha256, salt.length ? salt : new Uint8Array(SHA256_OUT), ikm);
}

/**
 * RFC 5869 section 2.3: T(i) = HMAC-Hash(PRK, T(i-1) | info | i), OKM = the
 * first L octets of T(1) | T(2) | ..., with "L <= 255*HashLen".
 */
export function hkdfExpandSha256(sha256: Sha256, prk: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  if (!Number.isInteger(length) || length < 0 || length > 255 * SHA256_OUT) fail('MALFORMED', 'HKDF length out of range');
  if (prk.length < SHA256_OUT) fail('MALFORMED', 'HKDF PRK shorter than the hash output');
  const okm = new Uint8Array(length);
  let t: Uint8Array = new Uint8Array(0);
  for (let i = 1, off = 0; off < length; i++) {
    const msg = new Uint8Array(t.length + info.length + 1);
    msg.set(t, 0);
    msg.set(info, t.length);
    msg[msg.length - 1] = i;
    const next = hmacSha256(sha256, prk, msg);
    t.fill(0);
    msg.fill(0);
    t = next;
    const n = Math.min(SHA256_OUT, length - off);
    okm.set(t.subarray(0, n), off);
    off += n;
  }
  t.fill(0);
  return okm;
}

export function composeSuite1(p: Suite1Primitives): CryptoSuite {
  const randomBytes = (n: number): Uint8Array => {
    const b = new Uint8Array(n);
    p.random.fill(b);
    return b;
  };
  return {
    ...SUITE1_PARAMETERS,
    name: p.name,
    dhKeyPair(): KeyPair {
      // §5.1: X_d is a fresh key pair for every attempt; its public half is X25519(k, 9).
      const privateKey = randomBytes(32);
      return { privateKey, publicKey: p.x25519(privateKey, basePoint()) };
    },
    dh(privateKey, peerPublicKey) {
      if (privateKey.length !== 32 || peerPublicKey.length !== 32) fail('BAD_KEY', 'X25519 keys must be 32 bytes');
      let z: Uint8Array;
      try {
        z = p.x25519(privateKey, peerPublicKey);
      } catch {
        throw new MqsecError('BAD_KEY', 'X25519 failed');
      }
      // RFC 7748 section 6.1 "MAY check ... whether K is the all-zero value and abort if so": mqsec
      // requires it (CryptoSuite.dh); a low-order peer key gives zero whatever the private key.
      if (isAllZero(z)) fail('BAD_KEY', 'X25519 shared secret is all zero');
      return z;
    },
    hash: (data) => p.sha256(data),
    hmac: (key, data) => hmacSha256(p.sha256, key, data),
    hkdfExtract: (salt, ikm) => hkdfExtractSha256(p.sha256, salt, ikm),
    hkdfExpand: (prk, info, length) => hkdfExpandSha256(p.sha256, prk, info, length),
    aeadSeal: (key, nonce, plaintext, aad) => p.aeadSeal(key, nonce, plaintext, aad),
    aeadOpen(key, nonce, sealed, aad) {
      if (sealed.length < 16) return undefined;
      return p.aeadOpen(key, nonce, sealed, aad);
    },
    randomBytes,
  };
}
