/**
 * The device's native C modules on the ESP32 families' instruction sets,
 * without a board (tools/native-isa.ts): every native C file of the device
 * build cross-compiled for RV32IMC/ilp32 (the ESP32-C3's ISA) and for Xtensa
 * (lx106 core) with the host build's warnings as errors, and a bare-metal
 * program run under QEMU on each ISA that checks the C X25519 against
 * RFC 7748 sections 5.2 (with the 1,000-iteration vector) and 6.1, the
 * low-order points, and random inputs whose results OpenSSL computes here on
 * the host, through the XS glue as the device calls it. The program also
 * counts the instructions of one X25519 (`mqsec bench` reports them).
 *
 * Both field implementations of mqsec-x25519.c run here: the ten-limb field
 * of the device build with every vector, and the sixteen-limb reference with
 * the RFC vectors, the low-order points and a few random inputs. The heavy
 * vector runs once: the 1,000 iterations of RFC 7748 5.2 on RV32IMC (3 million
 * instructions per X25519); Xtensa runs the first iteration and everything
 * else with fewer random inputs, because on the lx106 every 64-bit product
 * is a software routine (10 million instructions per X25519, and QEMU runs
 * Xtensa code more slowly) and QEMU's time matters on a shared 2-core machine.
 *
 * Nothing is skipped when a tool is missing: the tests fail and name the
 * Debian packages (.ci/packages.d/native.txt; `.ci/run` installs them).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildProbe, crossCompileNative, CLOCK_MHZ, CPI, ISAS, lx6Estimate, measureNativeX25519, missingTools, msEstimate, nativeSources, runProbe, type Isa, type ProbeResult, type X25519Field } from '../../tools/native-isa.js';
import { RFC7748_ITERATED, lowOrderCases, opensslCases, rfcCases, type X25519Case } from './x25519-vectors.js';

let dir: string;
const missing = ISAS.map(missingTools).filter((m): m is string => m !== undefined);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'mqsec-isa-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function requireTools(): void {
  if (missing.length) throw new Error(`cross-ISA tests need their toolchains: ${missing.join('; ')}`);
}

const toBytes = (c: X25519Case) => Uint8Array.from(Buffer.from(c.k + c.u, 'hex'));

function expectProbe(r: ProbeResult, cases: X25519Case[], iterations: number): void {
  expect(r.cases).toHaveLength(cases.length);
  r.cases.forEach((got, i) => expect(got, cases[i]!.what).toBe(cases[i]!.out));
  expect(r.iterate[1]).toBe(RFC7748_ITERATED[1]);
  if (iterations === 1000) expect(r.iterate[1000]).toBe(RFC7748_ITERATED[1000]);
  // XS glue: too few arguments, a short output buffer, a missing buffer; out aliasing u
  expect(r.errors).toEqual(['TypeError', 'RangeError', 'TypeError', 'alias-ok']);
}

describe('native C modules cross-compiled for the ESP32 instruction sets', () => {
  it('every native C file of the device build compiles for RV32IMC and Xtensa with -Werror', () => {
    requireTools();
    const names = nativeSources().map((s) => s.split('/').pop());
    expect(names).toEqual(expect.arrayContaining(['mqsec-random.c', 'mqsec-sleep.c', 'mqsec-x25519.c']));
    for (const isa of ISAS) {
      const sizes = crossCompileNative(isa, dir);
      expect(Object.keys(sizes).sort()).toEqual([...names].sort());
      for (const [name, bytes] of Object.entries(sizes)) expect(bytes, `${isa} ${name}`).toBeGreaterThan(0);
    }
  }, 180_000);

  it('a warning fails the cross build (the flags are not decorative)', () => {
    requireTools();
    // an unused static function in every file: -Wunused-function (-Wall), an error under -Werror
    const unused = join(dir, 'unused-function.h');
    writeFileSync(unused, 'static int mqsec_unused_probe(void) { return 0; }\n');
    for (const isa of ISAS) expect(() => crossCompileNative(isa, dir, ['-include', unused])).toThrow(/mqsec_unused_probe.*-Werror=unused-function|-Werror=unused-function/s);
  }, 120_000);
});

describe('native X25519 on RV32IMC and Xtensa under QEMU', () => {
  const deviceField: X25519Field = 10;
  const deviceCounts: Partial<Record<Isa, number>> = {};

  const iterations: Record<Isa, number> = { rv32imc: 1000, xtensa: 1 };

  const randomInputs: Record<Isa, number> = { rv32imc: 200, xtensa: 60 };

  it('device field (ten limbs): RFC 7748 5.2 (1,000 iterations on RV32IMC) and 6.1, low-order points, random inputs checked against OpenSSL (200 on RV32IMC, 60 on Xtensa)', async () => {
    requireTools();
    const casesOf = (isa: Isa) => [...rfcCases(), ...lowOrderCases(), ...opensslCases(randomInputs[isa])];
    const perIsa = ISAS.map((isa) => ({ isa, cases: casesOf(isa) }));
    const results = await Promise.all(perIsa.map(({ isa, cases }) => runProbe(isa, buildProbe(isa, dir, { cases: cases.map(toBytes), iterations: iterations[isa], field: deviceField }, 'full'))));
    results.forEach((r, i) => {
      const { isa, cases } = perIsa[i]!;
      expectProbe(r, cases, iterations[isa]);
      // eslint-disable-next-line no-console
      console.log(`${isa}: ${r.instructions} instructions per X25519 (QEMU ${Math.round(r.wallMs)} ms for ${cases.length + iterations[isa] + 2} operations)`);
    });
    results.forEach((r, i) => (deviceCounts[ISAS[i]!] = r.instructions));
  }, 240_000);

  it('reference field (sixteen limbs): the RFC vectors, the low-order points and random inputs', async () => {
    requireTools();
    const cases = [...rfcCases(), ...lowOrderCases(), ...opensslCases(4)];
    const results = await Promise.all(ISAS.map((isa) => runProbe(isa, buildProbe(isa, dir, { cases: cases.map(toBytes), iterations: 1, field: 16 }, 'reference'))));
    for (const r of results) expectProbe(r, cases, 1);
  }, 240_000);

  it('`mqsec bench` figures: the same counts, the reference field costs more, the ESP32 estimates follow from the counts', async () => {
    requireTools();
    const n = await measureNativeX25519();
    // eslint-disable-next-line no-console
    console.log('device_native', JSON.stringify(n));
    // -icount makes the count a property of the code: the bench's build is the test's build but for the
    // input table, which moves code and data a little (on Xtensa that changes a few hundred instructions)
    expect(n.x25519_instructions.rv32imc).toBe(deviceCounts.rv32imc);
    expect(Math.abs(n.x25519_instructions.xtensa - deviceCounts.xtensa!)).toBeLessThanOrEqual(deviceCounts.xtensa! * 1e-4);
    for (const isa of ISAS) expect(n.speedup_vs_field16[isa], isa).toBeGreaterThan(2);
    // the lx106 calls __muldi3 for each 32 x 32 -> 64-bit product: 10 multiplications x 100 products and
    // 4 squarings x 55 per ladder step dominate, so between 150k and 300k calls per X25519
    expect(n.xtensa_lx106_muldi3.calls).toBeGreaterThan(150_000);
    expect(n.xtensa_lx106_muldi3.calls).toBeLessThan(300_000);
    expect(n.xtensa_lx106_muldi3.instructions_per_call).toBeGreaterThan(10);
    expect(n.xtensa_lx6_instructions_estimate).toBe(lx6Estimate(n.x25519_instructions.xtensa, n.xtensa_lx106_muldi3.calls, n.xtensa_lx106_muldi3.instructions_per_call));
    expect(n.xtensa_lx6_instructions_estimate).toBeLessThan(n.x25519_instructions.xtensa);
    expect(n.x25519_ms_estimate.esp32c3_160mhz).toBe(msEstimate(n.x25519_instructions.rv32imc, CPI.esp32c3, CLOCK_MHZ.esp32c3));
    expect(n.x25519_ms_estimate.esp32_240mhz).toBe(msEstimate(n.xtensa_lx6_instructions_estimate, CPI.esp32, CLOCK_MHZ.esp32));
    // the budget: one X25519 <= 60 ms on an ESP32-C3 at 160 MHz at the stated CPI (a deterministic count, not a timing)
    expect(n.x25519_ms_estimate.esp32c3_160mhz).toBeLessThanOrEqual(60);
  }, 240_000);
});
