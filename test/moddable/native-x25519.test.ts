/**
 * The native X25519 module (firmware/platform/moddable/native/mqsec-x25519.c),
 * compiled by the host C compiler against the stub XS API (test/moddable/stubs)
 * with warnings as errors, and again with the address and undefined-behaviour
 * sanitizers, then checked against RFC 7748 and against OpenSSL
 * (node:crypto) on random and edge-case inputs. Both field implementations
 * run every check: the ten-limb field the device build selects and the
 * sixteen-limb reference (MQSEC_X25519_FIELD). The same C file is compiled
 * into the device build and exercised end to end by `npm run device:desktop`;
 * native-isa.test.ts runs it on RV32IMC and Xtensa under QEMU.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NATIVE_WARNING_FLAGS, STUBS_DIR, NATIVE_DIR } from '../../tools/native-isa.js';
import { RFC7748_ITERATED, lowOrderCases, opensslCases, rfcCases, type X25519Case } from './x25519-vectors.js';

const source = join(NATIVE_DIR, 'mqsec-x25519.c');
const driver = join(STUBS_DIR, 'x25519-driver.c');
const cc = spawnSync('cc', ['--version']).status === 0 ? 'cc' : undefined;
const flags = [...NATIVE_WARNING_FLAGS, '-D_GNU_SOURCE', '-I', STUBS_DIR];
let dir: string;

function run(bin: string, lines: string[]): string[] {
  return execFileSync(bin, { input: lines.join('\n') + '\n' }).toString().trim().split('\n');
}

function expectCases(bin: string, cases: X25519Case[]): void {
  const got = run(bin, cases.map((c) => `${c.k} ${c.u}`));
  got.forEach((g, i) => expect(g, cases[i]!.what).toBe(cases[i]!.out));
  expect(got).toHaveLength(cases.length);
}

beforeAll(() => {
  if (cc) dir = mkdtempSync(join(tmpdir(), 'mqsec-x25519-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!cc).each([10, 16])('native X25519 C module, %i-limb field (host cc, stub XS API)', (field) => {
  let exe: string;
  let sanitized: string | undefined;
  const fieldFlag = `-DMQSEC_X25519_FIELD=${field}`;

  beforeAll(() => {
    exe = join(dir, `x25519-${field}`);
    execFileSync(cc!, [...flags, fieldFlag, '-O2', source, driver, '-o', exe]);
    const san = join(dir, `x25519-${field}-san`);
    const r = spawnSync(cc!, [...flags, fieldFlag, '-O1', '-g', '-fsanitize=address,undefined', '-fno-sanitize-recover=all', source, driver, '-o', san]);
    sanitized = r.status === 0 ? san : undefined;
  });

  it('RFC 7748 sections 5.2 and 6.1: the vectors, both public keys and the shared secret, and 1 and 1,000 iterations', () => {
    expectCases(exe, rfcCases());
    expect(execFileSync(exe, ['iterate', '1']).toString().trim()).toBe(RFC7748_ITERATED[1]);
    expect(execFileSync(exe, ['iterate', '1000']).toString().trim()).toBe(RFC7748_ITERATED[1000]);
  });

  it('agrees with OpenSSL on random scalars and points, and on non-canonical and top-bit u', () => {
    expectCases(exe, opensslCases(300));
  });

  it('low-order points give the all-zero output (the suite refuses it with BAD_KEY)', () => {
    expectCases(exe, lowOrderCases());
  });

  it('refuses bad arguments as XS exceptions and allows the output to alias an input', () => {
    expect(JSON.parse(execFileSync(exe, ['errors']).toString())).toEqual({ argc: 'TypeError', shortOut: 'RangeError', longScalar: 'RangeError', notBuffer: 'TypeError', aliasOk: 1 });
  });

  it('runs clean under AddressSanitizer and UndefinedBehaviorSanitizer', (ctx) => {
    if (!sanitized) return ctx.skip();
    expect(execFileSync(sanitized, ['iterate', '50']).toString().trim()).toMatch(/^[0-9a-f]{64}$/);
    // limbs at their extremes: all-ones and top-bit inputs, plus OpenSSL-checked random ones
    const lines = Array.from({ length: 40 }, (_, i) => `${(i * 7 + 1).toString(16).padStart(2, '0').repeat(32)} ${(255 - i).toString(16).padStart(2, '0').repeat(32)}`);
    expect(run(sanitized, lines)).toEqual(run(exe, lines));
    expectCases(sanitized, [...rfcCases(), ...lowOrderCases(), ...opensslCases(40)]);
    expect(JSON.parse(execFileSync(sanitized, ['errors']).toString()).aliasOk).toBe(1);
  });

  it('the ESP32 build of the file compiles', () => {
    execFileSync(cc!, [...flags, fieldFlag, '-fsyntax-only', '-DESP32=1', source]);
  });
});

describe.skipIf(!cc)('native X25519 field selection', () => {
  it('refuses a field that does not exist', () => {
    const r = spawnSync(cc!, [...flags, '-DMQSEC_X25519_FIELD=12', '-fsyntax-only', source]);
    expect(r.status).not.toBe(0);
    expect(r.stderr.toString()).toMatch(/MQSEC_X25519_FIELD must be 10 or 16/);
  });
});
