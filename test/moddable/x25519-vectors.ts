/**
 * X25519 test inputs shared by the host test of the native module
 * (native-x25519.test.ts) and its runs on RV32IMC and Xtensa under QEMU
 * (native-isa.test.ts): RFC 7748's vectors, the low-order points, and
 * random and edge inputs whose expected results come from OpenSSL.
 */
import { randomBytes } from 'node:crypto';
import { LOW_ORDER_POINTS, opensslX25519 } from '../secure/helpers.js';

/** RFC 7748 section 5.2: the two single-operation vectors (scalar, u, result). */
export const RFC7748_5_2 = [
  {
    k: 'a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4',
    u: 'e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c',
    out: 'c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552',
  },
  {
    k: '4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d',
    u: 'e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493',
    out: '95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957',
  },
];
/** RFC 7748 section 5.2: k after 1 and after 1,000 iterations. */
export const RFC7748_ITERATED: Record<number, string> = {
  1: '422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079',
  1000: '684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51',
};
/** RFC 7748 section 6.1: Alice's and Bob's keys and their shared secret. */
export const RFC7748_6_1 = {
  alice: '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a',
  alicePub: '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
  bob: '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb',
  bobPub: 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f',
  shared: '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742',
};
export const BASE_POINT = '09' + '00'.repeat(31);

export interface X25519Case {
  k: string;
  u: string;
  /** expected result (hex) */
  out: string;
  what: string;
}

const P = (1n << 255n) - 19n;
const le = (n: bigint) => {
  const b = Buffer.alloc(32);
  for (let i = 0; i < 32; i++) b[i] = Number((n >> BigInt(8 * i)) & 0xffn);
  return b.toString('hex');
};

/** OpenSSL's X25519, with the all-zero result it refuses to return written out. */
export function opensslExpected(k: string, u: string): string {
  try {
    return Buffer.from(opensslX25519(Buffer.from(k, 'hex'), Buffer.from(u, 'hex'))).toString('hex');
  } catch {
    return '00'.repeat(32); // OpenSSL refuses an all-zero result; the module returns it and the suite refuses it
  }
}

/** The RFC 7748 vectors of sections 5.2 (single operations) and 6.1 (both public keys and both shared secrets). */
export function rfcCases(): X25519Case[] {
  const v = RFC7748_6_1;
  return [
    ...RFC7748_5_2.map((c, i) => ({ ...c, what: `RFC 7748 5.2 vector ${i + 1}` })),
    { k: v.alice, u: BASE_POINT, out: v.alicePub, what: 'RFC 7748 6.1 Alice public' },
    { k: v.bob, u: BASE_POINT, out: v.bobPub, what: 'RFC 7748 6.1 Bob public' },
    { k: v.alice, u: v.bobPub, out: v.shared, what: 'RFC 7748 6.1 Alice shared' },
    { k: v.bob, u: v.alicePub, out: v.shared, what: 'RFC 7748 6.1 Bob shared' },
  ];
}

/** The curve's and the twist's low-order u, their non-canonical encodings, and the same with the top bit set: all give zero. */
export function lowOrderCases(): X25519Case[] {
  return LOW_ORDER_POINTS.flatMap((u) => {
    const top = Buffer.from(u, 'hex');
    top[31]! |= 0x80;
    return [u, top.toString('hex')].map((x) => ({ k: '5a'.repeat(32), u: x, out: '00'.repeat(32), what: `low order ${x}` }));
  });
}

/** n random scalars and points plus non-canonical and top-bit u, expected results from OpenSSL. */
export function opensslCases(n: number): X25519Case[] {
  const pairs: [string, string][] = [];
  for (let i = 0; i < n; i++) pairs.push([randomBytes(32).toString('hex'), randomBytes(32).toString('hex')]);
  // u = p .. 2^255 - 1 (non-canonical, "MUST accept"), u with the top bit set, u = 0 and 1, p - 1
  for (const u of [P, P + 1n, P + 18n, (1n << 255n) - 1n, (1n << 256n) - 1n, 0n, 1n, P - 1n, 9n | (1n << 255n)]) pairs.push(['a8'.repeat(32), le(u)]);
  return pairs.map(([k, u]) => ({ k, u, out: opensslExpected(k, u), what: `OpenSSL ${k} ${u}` }));
}
