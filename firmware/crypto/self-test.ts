/**
 * Known-answer self-test of a CryptoSuite, run by the device at power-on
 * before any key is used: a miscompiled or misconfigured native primitive
 * (the C X25519, the SDK's SHA-256) must stop the node with a clear error
 * instead of producing keys the broker can never agree with, or weak ones.
 * One X25519 scalar multiplication, one hash, one HMAC, one HKDF, one AEAD
 * round trip with a forged-tag check.
 */
import { constantTimeEqual, fromHex } from '../core/bytes.js';
import { fail } from '../core/errors.js';
import { utf8Encode } from '../core/utf8.js';
import type { CryptoSuite } from './suite.js';

function expectBytes(what: string, got: Uint8Array | undefined, hex: string): void {
  if (!got || !constantTimeEqual(got, fromHex(hex))) fail('INTERNAL', `crypto self-test failed: ${what}`);
}

export function cryptoSelfTest(suite: CryptoSuite): void {
  // RFC 7748 section 6.1: Alice's private key with Bob's public key gives the shared secret K.
  expectBytes(
    'X25519 (RFC 7748 6.1)',
    suite.dh(fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a'), fromHex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f')),
    '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742',
  );
  // FIPS 180-2 appendix B.1: SHA-256("abc")
  expectBytes('SHA-256 (FIPS 180-2 B.1)', suite.hash(utf8Encode('abc')), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  // RFC 4231 test case 2
  expectBytes('HMAC-SHA256 (RFC 4231 4.3)', suite.hmac(utf8Encode('Jefe'), utf8Encode('what do ya want for nothing?')), '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
  // RFC 5869 A.3 (zero-length salt and info)
  expectBytes(
    'HKDF-SHA256 (RFC 5869 A.3)',
    suite.hkdfExpand(suite.hkdfExtract(new Uint8Array(0), fromHex('0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b')), new Uint8Array(0), 42),
    '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8',
  );
  // AEAD: a round trip, and a flipped tag bit refused
  const key = suite.hash(utf8Encode('mqsec self-test key'));
  const nonce = new Uint8Array(12);
  const aad = utf8Encode('sensors/selftest');
  const plaintext = utf8Encode('mqsec');
  const sealed = suite.aeadSeal(key, nonce, plaintext, aad);
  const opened = suite.aeadOpen(key, nonce, sealed, aad);
  if (!opened || !constantTimeEqual(opened, plaintext)) fail('INTERNAL', 'crypto self-test failed: AEAD round trip');
  sealed[sealed.length - 1] ^= 1;
  if (suite.aeadOpen(key, nonce, sealed, aad) !== undefined) fail('INTERNAL', 'crypto self-test failed: AEAD accepted a forged tag');
}
