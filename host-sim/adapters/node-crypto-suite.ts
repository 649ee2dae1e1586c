/**
 * Suite 1 (X25519, HKDF-SHA256, HMAC-SHA256, ChaCha20-Poly1305) on node:crypto
 * (OpenSSL), for the broker's speed: roughly 15x faster X25519 than the
 * portable noble suite. Same CryptoSuite interface; cross-tested byte for byte
 * against firmware/crypto/noble.ts (test/secure/crypto-suites.test.ts).
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  randomFillSync,
  type KeyObject,
} from 'node:crypto';
import { MqsecError, fail } from '../../firmware/core/errors.js';
import type { Random } from '../../firmware/core/platform.js';
import { SUITE_X25519_CHACHAPOLY_SHA256, type CryptoSuite, type KeyPair } from '../../firmware/crypto/suite.js';

// RFC 8410 DER wrappers for raw X25519 keys (OID 1.3.101.110).
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function privateKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) fail('BAD_KEY', 'X25519 private key must be 32 bytes');
  return createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) fail('BAD_KEY', 'X25519 public key must be 32 bytes');
  return createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, raw]), format: 'der', type: 'spki' });
}

function u8(b: Buffer): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

const nodeRandom: Random = { fill: (b) => void randomFillSync(b) };

export function createNodeCryptoSuite(random: Random = nodeRandom): CryptoSuite {
  const randomBytes = (n: number): Uint8Array => {
    const b = new Uint8Array(n);
    random.fill(b);
    return b;
  };
  const hmac = (key: Uint8Array, data: Uint8Array): Uint8Array => u8(createHmac('sha256', key).update(data).digest());
  return {
    id: SUITE_X25519_CHACHAPOLY_SHA256,
    name: 'x25519-chacha20poly1305-sha256 (node:crypto)',
    dhPublicLength: 32,
    hashLength: 32,
    aeadKeyLength: 32,
    aeadNonceLength: 12,
    aeadTagLength: 16,
    dhKeyPair(): KeyPair {
      const privateKey = randomBytes(32);
      const spki = createPublicKey(privateKeyObject(privateKey)).export({ format: 'der', type: 'spki' });
      return { privateKey, publicKey: new Uint8Array(spki.subarray(spki.length - 32)) };
    },
    dh(privateKey, peerPublicKey) {
      const pub = publicKeyObject(peerPublicKey);
      let z: Uint8Array;
      try {
        z = u8(diffieHellman({ privateKey: privateKeyObject(privateKey), publicKey: pub }));
      } catch {
        // OpenSSL refuses the all-zero shared secret of a small-order point (RFC 7748 section 6.1).
        throw new MqsecError('BAD_KEY', 'X25519 shared secret rejected');
      }
      let acc = 0;
      for (let i = 0; i < z.length; i++) acc |= z[i];
      if (acc === 0) fail('BAD_KEY', 'X25519 shared secret is all zero');
      return z;
    },
    hash: (data) => u8(createHash('sha256').update(data).digest()),
    hmac,
    // RFC 5869 section 2.2: PRK = HMAC-Hash(salt, IKM); an empty salt acts as HashLen zeros,
    // which HMAC's zero padding of short keys gives for free.
    hkdfExtract: (salt, ikm) => hmac(salt, ikm),
    // RFC 5869 section 2.3: T(i) = HMAC-Hash(PRK, T(i-1) | info | i), L <= 255 * HashLen.
    hkdfExpand(prk, info, length) {
      if (length > 255 * 32) fail('INTERNAL', 'HKDF output too long');
      const out = new Uint8Array(length);
      let t: Uint8Array = new Uint8Array(0);
      let off = 0;
      for (let i = 1; off < length; i++) {
        const h = createHmac('sha256', prk);
        h.update(t).update(info).update(new Uint8Array([i]));
        t = u8(h.digest());
        out.set(t.subarray(0, Math.min(32, length - off)), off);
        off += 32;
      }
      return out;
    },
    aeadSeal(key, nonce, plaintext, aad) {
      const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
      c.setAAD(aad, { plaintextLength: plaintext.length });
      const ct = c.update(plaintext);
      c.final();
      return u8(Buffer.concat([ct, c.getAuthTag()]));
    },
    aeadOpen(key, nonce, sealed, aad) {
      if (sealed.length < 16) return undefined;
      const ctLen = sealed.length - 16;
      try {
        const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
        d.setAAD(aad, { plaintextLength: ctLen });
        d.setAuthTag(sealed.subarray(ctLen));
        const pt = d.update(sealed.subarray(0, ctLen));
        d.final();
        return u8(pt);
      } catch {
        return undefined;
      }
    },
    randomBytes,
  };
}
