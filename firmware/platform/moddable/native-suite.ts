/**
 * The device's crypto suite (suite 1) from native code where the device has
 * it: X25519 from mqsec's C module (native/mqsec-x25519.c), SHA-256 from the
 * Moddable SDK's native `crypt` Digest, HMAC and HKDF on top of that hash
 * (firmware/crypto/compose.ts), and ChaCha20-Poly1305 from @noble/ciphers
 * (the SDK has no Poly1305). Only parameters here; the mechanism is
 * composeSuite1, tested under Node and XS.
 */
import { Digest } from 'crypt';
import x25519Native from 'mqsec/x25519-native';
import type { Random } from '../../core/platform.js';
import type { CryptoSuite } from '../../crypto/suite.js';
import { composeSuite1, type Sha256 } from '../../crypto/compose.js';
import { chachaPolyOpen, chachaPolySeal } from '../../crypto/chacha20poly1305.js';

export function createNativeSuite(random: Random): CryptoSuite {
  // One digest object, reset per call: hashing is synchronous, so calls never interleave.
  const digest = new Digest('SHA256');
  const sha256: Sha256 = (...parts) => {
    digest.reset();
    // The native write reads any buffer view (xsmcGetBufferReadable); the SDK's typings only say ArrayBuffer.
    for (const part of parts) digest.write(part as unknown as ArrayBuffer);
    return new Uint8Array(digest.close());
  };
  return composeSuite1({
    name: 'x25519 (C) + SHA-256 (Moddable crypt) + ChaCha20-Poly1305 (noble)',
    x25519(scalar, u) {
      const out = new Uint8Array(32);
      x25519Native(out, scalar, u);
      return out;
    },
    sha256,
    aeadSeal: chachaPolySeal,
    aeadOpen: chachaPolyOpen,
    random,
  });
}
