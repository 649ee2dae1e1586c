import { exposeToHost, hostRandom } from '../guest.js';
import { utf8Encode, utf8Decode } from '../../../firmware/core/utf8.js';
import { encodeRemainingLength, decodeRemainingLength, encodeVarint, decodeVarint } from '../../../firmware/core/varint.js';
import { constantTimeEqual, u48be, readU48be } from '../../../firmware/core/bytes.js';
import { createNobleSuite } from '../../../firmware/crypto/noble.js';
import { x25519 } from '../../../firmware/crypto/x25519.js';
import { isCharsOf, isHexDigit, isIdChar, isIpv4Literal } from '../../../firmware/core/ascii.js';
import { hkdf } from '../../../firmware/crypto/suite.js';

import { composeSuite1 } from '../../../firmware/crypto/compose.js';
import { chachaPolyOpen, chachaPolySeal } from '../../../firmware/crypto/chacha20poly1305.js';
import { cryptoSelfTest } from '../../../firmware/crypto/self-test.js';
import { sha256 } from '@noble/hashes/sha2.js';

const suite = createNobleSuite(hostRandom);
// The generic mechanism of the device's native suite, with portable primitives in place of the native ones.
const composed = composeSuite1({
  name: 'composed (XS test)',
  x25519: (k, u) => x25519.scalarMult(k, u),
  sha256: (...parts) => {
    const h = sha256.create();
    for (const p of parts) h.update(p);
    return h.digest();
  },
  aeadSeal: chachaPolySeal,
  aeadOpen: chachaPolyOpen,
  random: hostRandom,
});

exposeToHost({
  engine: () => ({ hasProcess: typeof (globalThis as any).process !== 'undefined', hasPrint: typeof (globalThis as any).print === 'function', hasBuffer: typeof (globalThis as any).Buffer !== 'undefined' }),
  utf8Encode: (s: string) => utf8Encode(s),
  utf8Decode: (b: Uint8Array) => {
    try {
      return { ok: utf8Decode(b, true) };
    } catch (e: any) {
      return { code: e.code };
    }
  },
  remainingLength: (n: number) => {
    const enc = encodeRemainingLength(n);
    return { enc, dec: decodeRemainingLength(enc, 0) };
  },
  varint: (n: number) => {
    const enc = encodeVarint(n);
    return { enc, dec: decodeVarint(enc, 0) };
  },
  u48: (n: number) => readU48be(u48be(n), 0),
  ctEqual: (a: Uint8Array, b: Uint8Array) => constantTimeEqual(a, b),
  x25519Public: (priv: Uint8Array) => {
    const kp = suite.dh(priv, new Uint8Array([9, ...new Uint8Array(31)]));
    return kp;
  },
  dh: (priv: Uint8Array, pub: Uint8Array) => {
    try {
      return { ok: suite.dh(priv, pub) };
    } catch (e: any) {
      return { code: e.code };
    }
  },
  /** RFC 7748 section 5.2 iterated vector: k, u = X25519(k, u), k, n times. */
  x25519Iterate: (n: number) => {
    let k: Uint8Array = new Uint8Array(32);
    k[0] = 9;
    let u: Uint8Array = k.slice();
    for (let i = 0; i < n; i++) {
      const next = x25519.scalarMult(k, u);
      u = k;
      k = next;
    }
    return k;
  },
  ascii: (strings: string[]) => strings.map((s) => [isCharsOf(s, 1, 23, isIdChar), isCharsOf(s, 0, 64, isHexDigit), isIpv4Literal(s)]),
  selfTest: () => {
    cryptoSelfTest(suite);
    cryptoSelfTest(composed);
    return true;
  },
  composedHmac: (k: Uint8Array, d: Uint8Array) => composed.hmac(k, d),
  composedHkdf: (salt: Uint8Array, ikm: Uint8Array, info: Uint8Array, len: number) => hkdf(composed, salt, ikm, info, len),
  hkdf: (salt: Uint8Array, ikm: Uint8Array, info: Uint8Array, len: number) => hkdf(suite, salt, ikm, info, len),
  hmac: (k: Uint8Array, d: Uint8Array) => suite.hmac(k, d),
  seal: (k: Uint8Array, n: Uint8Array, p: Uint8Array, a: Uint8Array) => suite.aeadSeal(k, n, p, a),
  open: (k: Uint8Array, n: Uint8Array, c: Uint8Array, a: Uint8Array) => suite.aeadOpen(k, n, c, a) ?? null,
  randomLen: (n: number) => suite.randomBytes(n).length,
  asyncEcho: async (v: unknown) => {
    await Promise.resolve();
    return v;
  },
});
