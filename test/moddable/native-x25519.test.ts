/**
 * The native X25519 module (firmware/platform/moddable/native/mqsec-x25519.c),
 * compiled by the host C compiler against the stub XS API (test/moddable/stubs)
 * with warnings as errors, and again with the address and undefined-behaviour
 * sanitizers, then checked against RFC 7748 and against OpenSSL
 * (node:crypto) on random and edge-case inputs. The same C file is compiled
 * into the device build and exercised end to end by `npm run device:desktop`.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fc from 'fast-check';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LOW_ORDER_POINTS, opensslX25519 } from '../secure/helpers.js';

const stubs = fileURLToPath(new URL('./stubs', import.meta.url));
const source = fileURLToPath(new URL('../../firmware/platform/moddable/native/mqsec-x25519.c', import.meta.url));
const driver = join(stubs, 'x25519-driver.c');
const cc = spawnSync('cc', ['--version']).status === 0 ? 'cc' : undefined;
const flags = ['-std=c11', '-Wall', '-Wextra', '-Werror', '-Wconversion', '-Wno-sign-conversion', '-D_GNU_SOURCE', '-I', stubs];
let dir: string;
let exe: string;
let sanitized: string | undefined;

const P = (1n << 255n) - 19n;
const le = (n: bigint) => {
  const b = Buffer.alloc(32);
  for (let i = 0; i < 32; i++) b[i] = Number((n >> BigInt(8 * i)) & 0xffn);
  return b.toString('hex');
};

function run(bin: string, lines: string[]): string[] {
  return execFileSync(bin, { input: lines.join('\n') + '\n' }).toString().trim().split('\n');
}

function openssl(k: string, u: string): string {
  try {
    return Buffer.from(opensslX25519(Buffer.from(k, 'hex'), Buffer.from(u, 'hex'))).toString('hex');
  } catch {
    return '00'.repeat(32); // OpenSSL refuses an all-zero result; the module returns it and the suite refuses it
  }
}

beforeAll(() => {
  if (!cc) return;
  dir = mkdtempSync(join(tmpdir(), 'mqsec-x25519-'));
  exe = join(dir, 'x25519');
  execFileSync(cc, [...flags, '-O2', source, driver, '-o', exe]);
  const san = join(dir, 'x25519-san');
  const r = spawnSync(cc, [...flags, '-O1', '-g', '-fsanitize=address,undefined', '-fno-sanitize-recover=all', source, driver, '-o', san]);
  sanitized = r.status === 0 ? san : undefined;
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!cc)('native X25519 C module (host cc, stub XS API)', () => {
  it('RFC 7748 section 5.2: the two vectors, and 1 and 1,000 iterations', () => {
    expect(
      run(exe, [
        'a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4 e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c',
        '4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493',
      ]),
    ).toEqual(['c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552', '95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957']);
    expect(execFileSync(exe, ['iterate', '1']).toString().trim()).toBe('422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079');
    expect(execFileSync(exe, ['iterate', '1000']).toString().trim()).toBe('684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51');
  });

  it('RFC 7748 section 6.1: both public keys and the shared secret', () => {
    const alice = '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a';
    const bob = '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb';
    const nine = '09' + '00'.repeat(31);
    const [alicePub, bobPub] = run(exe, [`${alice} ${nine}`, `${bob} ${nine}`]);
    expect(alicePub).toBe('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
    expect(bobPub).toBe('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
    expect(run(exe, [`${alice} ${bobPub}`, `${bob} ${alicePub}`])).toEqual(Array(2).fill('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742'));
  });

  it('agrees with OpenSSL on random scalars and points, and on non-canonical and top-bit u', () => {
    const cases: [string, string][] = [];
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), (k, u) => {
        cases.push([Buffer.from(k).toString('hex'), Buffer.from(u).toString('hex')]);
      }),
      { numRuns: 300 },
    );
    const k = 'a8'.repeat(32);
    // u = p .. 2^255 - 1 (non-canonical, "MUST accept"), u with the top bit set, u = 0 and 1, p - 1
    for (const u of [P, P + 1n, P + 18n, (1n << 255n) - 1n, (1n << 256n) - 1n, 0n, 1n, P - 1n, 9n | (1n << 255n)]) cases.push([k, le(u)]);
    const got = run(exe, cases.map(([a, b]) => `${a} ${b}`));
    got.forEach((g, i) => expect(g, cases[i]!.join(' ')).toBe(openssl(cases[i]![0], cases[i]![1])));
  });

  it('low-order points give the all-zero output (the suite refuses it with BAD_KEY)', () => {
    // the curve's and the twist's low-order u (0, 1, p - 1 and the two of order 8), their
    // non-canonical encodings p and p + 1, and the same with the top bit set (masked away)
    const lines = LOW_ORDER_POINTS.flatMap((u) => {
      const top = Buffer.from(u, 'hex');
      top[31]! |= 0x80;
      return [`${'5a'.repeat(32)} ${u}`, `${'5a'.repeat(32)} ${top.toString('hex')}`];
    });
    for (const out of run(exe, lines)) expect(out).toBe('00'.repeat(32));
  });

  it('refuses bad arguments as XS exceptions and allows the output to alias an input', () => {
    expect(JSON.parse(execFileSync(exe, ['errors']).toString())).toEqual({ argc: 'TypeError', shortOut: 'RangeError', longScalar: 'RangeError', notBuffer: 'TypeError', aliasOk: 1 });
  });

  it('runs clean under AddressSanitizer and UndefinedBehaviorSanitizer', (ctx) => {
    if (!sanitized) return ctx.skip();
    expect(execFileSync(sanitized, ['iterate', '50']).toString().trim()).toMatch(/^[0-9a-f]{64}$/);
    const lines = Array.from({ length: 40 }, (_, i) => `${(i * 7 + 1).toString(16).padStart(2, '0').repeat(32)} ${(255 - i).toString(16).padStart(2, '0').repeat(32)}`);
    expect(run(sanitized, lines)).toEqual(run(exe, lines));
    expect(JSON.parse(execFileSync(sanitized, ['errors']).toString()).aliasOk).toBe(1);
  });

  it('the ESP32 build of the file compiles', () => {
    execFileSync(cc!, [...flags, '-fsyntax-only', '-DESP32=1', source]);
  });
});
