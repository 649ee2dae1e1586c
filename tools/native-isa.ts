/**
 * The device's native C modules on the ESP32 families' instruction sets,
 * without a board: cross-compiled with Debian's bare-metal toolchains and run
 * under QEMU with semihosting.
 *
 * - RV32IMC/ilp32 (the ESP32-C3's ISA): `riscv64-unknown-elf-gcc -march=rv32imc
 *   -mabi=ilp32` with picolibc, run on `qemu-system-riscv32 -machine virt`.
 *   Instructions are counted by the core itself: `rdinstret`, which QEMU
 *   counts exactly under `-icount`.
 * - Xtensa: `xtensa-lx106-elf-gcc` (the ESP8266's lx106 core, the only Xtensa
 *   toolchain Debian ships) with picolibc, run on `qemu-system-xtensa -M sim
 *   -cpu lx106`. CCOUNT follows QEMU's virtual clock, which under `-icount`
 *   advances by a fixed amount per instruction: the probe calibrates it on
 *   10,000 nops. The lx106 lacks the ESP32's (LX6) high-half multiplier, so
 *   every 32 x 32 -> 64-bit product is a call to `__muldi3`; the ESP32 figure
 *   is estimated by replacing each call's measured cost with the two
 *   instructions (mull, mulsh) the LX6 needs.
 *
 * Compiler flags: the host build's warning set (with -Werror) and the
 * Moddable SDK's ESP32 code generation flags (`-Os -fno-inline-functions
 * -ffunction-sections -fdata-sections -fno-jump-tables`, and
 * `-mtext-section-literals -mlongcalls` on Xtensa: tools/mcconfig/make.esp32.mk).
 *
 * Used by test/moddable/native-isa.test.ts and `mqsec bench` (device_native).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from './moddable.js';

export const NATIVE_DIR = join(REPO_ROOT, 'firmware/platform/moddable/native');
/** Stub XS host API (xsmc.h, xsHost.h) and ESP-IDF signatures, so the XS glue compiles without the SDK. */
export const STUBS_DIR = join(REPO_ROOT, 'test/moddable/stubs');
export const PROBE_DIR = join(REPO_ROOT, 'tools/native-isa');

/** The warning set of the host build of the native modules (test/moddable/native-*.test.ts). */
export const NATIVE_WARNING_FLAGS = ['-std=c11', '-Wall', '-Wextra', '-Werror', '-Wconversion', '-Wno-sign-conversion'];
/** Code generation as in the Moddable SDK's ESP32 builds. */
const DEVICE_CODEGEN_FLAGS = ['-Os', '-fno-inline-functions', '-ffunction-sections', '-fdata-sections', '-fno-jump-tables'];

export type Isa = 'rv32imc' | 'xtensa';
export const ISAS: readonly Isa[] = ['rv32imc', 'xtensa'];
/** The two field implementations of mqsec-x25519.c (MQSEC_X25519_FIELD): 10 is the device default. */
export type X25519Field = 10 | 16;

interface IsaToolchain {
  cc: string;
  /** Compiler flags for this ISA (before the shared ones). */
  archFlags: string[];
  /** Files whose absence means the C library for this ISA is missing. */
  libc: string;
  /** Flags and files to link the probe (after the sources). */
  link: { before: string[]; after: string[] };
  qemu: string;
  qemuArgs: (elf: string) => string[];
  /** Where QEMU puts the program's semihosted output. */
  console: 'stdout' | 'stderr';
  /** Debian packages providing the above (for the error message). */
  packages: string[];
}

const RISCV_PICOLIBC = '/usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs';
const XTENSA_PICOLIBC = '/usr/lib/xtensa-lx106-elf/picolibc.specs';

const TOOLCHAINS: Record<Isa, IsaToolchain> = {
  rv32imc: {
    cc: 'riscv64-unknown-elf-gcc',
    archFlags: ['-march=rv32imc', '-mabi=ilp32', `--specs=${RISCV_PICOLIBC}`],
    libc: RISCV_PICOLIBC,
    link: {
      before: ['--oslib=semihost', '--crt0=semihost'],
      // QEMU virt: RAM from 0x80000000; code and data in separate 2 MB halves
      after: ['-Wl,--defsym=__flash=0x80000000', '-Wl,--defsym=__flash_size=0x200000', '-Wl,--defsym=__ram=0x80200000', '-Wl,--defsym=__ram_size=0x200000', '-Wl,--gc-sections'],
    },
    qemu: 'qemu-system-riscv32',
    qemuArgs: (elf) => ['-machine', 'virt', '-cpu', 'rv32', '-bios', 'none', '-kernel', elf, '-semihosting-config', 'enable=on,target=native', '-icount', 'shift=0'],
    // picolibc opens ":tt" for stdout; QEMU 7.2's semihosting console writes it to its own stderr
    console: 'stderr',
    packages: ['gcc-riscv64-unknown-elf', 'picolibc-riscv64-unknown-elf', 'qemu-system-misc'],
  },
  xtensa: {
    cc: 'xtensa-lx106-elf-gcc',
    archFlags: ['-mtext-section-literals', '-mlongcalls', `--specs=${XTENSA_PICOLIBC}`],
    libc: XTENSA_PICOLIBC,
    link: {
      before: ['-nostartfiles', '-T', join(PROBE_DIR, 'xtensa-sim.ld'), join(PROBE_DIR, 'start-xtensa.S')],
      after: ['-Wl,--gc-sections'],
    },
    qemu: 'qemu-system-xtensa',
    // -icount shift=7: 128 ns of virtual time per instruction, so CCOUNT (40 MHz in QEMU's lx106) moves ~5 per instruction
    qemuArgs: (elf) => ['-M', 'sim', '-cpu', 'lx106', '-semihosting', '-kernel', elf, '-icount', 'shift=7'],
    // the write simcall on descriptor 1 is QEMU's stdout
    console: 'stdout',
    packages: ['gcc-xtensa-lx106', 'picolibc-xtensa-lx106-elf', 'qemu-system-misc'],
  },
};

/** What is missing to build and run for this ISA, as one sentence, or undefined when everything is there. */
export function missingTools(isa: Isa): string | undefined {
  const t = TOOLCHAINS[isa];
  const missing: string[] = [];
  for (const bin of [t.cc, t.qemu]) if (spawnSync(bin, ['--version']).status !== 0) missing.push(bin);
  if (!existsSync(t.libc)) missing.push(t.libc);
  return missing.length ? `${isa}: missing ${missing.join(', ')} (Debian packages: ${t.packages.join(' ')}; listed in .ci/packages.d/native.txt)` : undefined;
}

function compile(isa: Isa, args: string[]): void {
  const r = spawnSync(TOOLCHAINS[isa].cc, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${TOOLCHAINS[isa].cc} ${args.join(' ')}\n${r.stderr || r.error}`);
}

/** The native C files of the device build (every *.c next to the manifest). */
export function nativeSources(): string[] {
  return readdirSync(NATIVE_DIR)
    .filter((f) => f.endsWith('.c'))
    .sort()
    .map((f) => join(NATIVE_DIR, f));
}

/**
 * Compiles every native C file to an object file for the ISA, as the ESP32
 * build does (-DESP32=1, the ESP-IDF branch of each module), with the host
 * build's warnings as errors. Returns each object's code size in bytes.
 */
export function crossCompileNative(isa: Isa, dir: string, extraFlags: string[] = []): Record<string, number> {
  const sizes: Record<string, number> = {};
  for (const src of nativeSources()) {
    const name = src.slice(NATIVE_DIR.length + 1);
    const obj = join(dir, `${isa}-${name}.o`);
    compile(isa, [...TOOLCHAINS[isa].archFlags, ...NATIVE_WARNING_FLAGS, ...DEVICE_CODEGEN_FLAGS, '-DESP32=1', ...extraFlags, '-I', STUBS_DIR, '-c', src, '-o', obj]);
    sizes[name] = textSize(isa, obj);
  }
  return sizes;
}

function textSize(isa: Isa, obj: string): number {
  const size = TOOLCHAINS[isa].cc.replace(/gcc$/, 'size');
  const r = spawnSync(size, [obj], { encoding: 'utf8' });
  const row = r.stdout?.split('\n')[1]?.trim().split(/\s+/);
  if (r.status !== 0 || !row) throw new Error(`${size} ${obj}: ${r.stderr}`);
  return Number(row[0]);
}

export interface ProbeInput {
  /** scalar || u, 64 bytes each, results printed in this order */
  cases?: Uint8Array[];
  /** RFC 7748 section 5.2 iteration count (0: none; 1 is always printed when >= 1) */
  iterations?: number;
  field?: X25519Field;
  /** Xtensa only: count __muldi3 calls per X25519 (the counting itself costs instructions). */
  countCalls?: boolean;
}

/** Builds the bare-metal probe (tools/native-isa/x25519-probe.c) with mqsec-x25519.c for the ISA; returns the ELF path. */
export function buildProbe(isa: Isa, dir: string, input: ProbeInput, tag = 'probe'): string {
  const cases = input.cases ?? [];
  const rows = cases.map((c) => {
    if (c.length !== 64) throw new Error('probe case: scalar || u must be 64 bytes');
    return `\t{ ${Array.from(c, (b) => `0x${b.toString(16).padStart(2, '0')}`).join(', ')} },`;
  });
  const caseDir = join(dir, `${isa}-${tag}`);
  rmSync(caseDir, { recursive: true, force: true });
  mkdirSync(caseDir, { recursive: true });
  writeFileSync(
    join(caseDir, 'probe-cases.h'),
    [
      `#define PROBE_CASES ${cases.length}`,
      `#define PROBE_ITERATIONS ${input.iterations ?? 0}`,
      `static const uint8_t kProbeCases[${Math.max(cases.length, 1)}][64] = {`,
      ...(rows.length ? rows : ['\t{ 0 },']),
      '};',
      '',
    ].join('\n'),
  );
  const t = TOOLCHAINS[isa];
  const elf = join(caseDir, 'probe.elf');
  const defines = [`-DMQSEC_X25519_FIELD=${input.field ?? 10}`, ...(input.countCalls ? ['-DPROBE_COUNT_CALLS'] : [])];
  const sources = [join(PROBE_DIR, 'x25519-probe.c'), join(PROBE_DIR, isa === 'rv32imc' ? 'port-riscv.c' : 'port-xtensa.c'), join(NATIVE_DIR, 'mqsec-x25519.c')];
  compile(isa, [...t.archFlags, ...NATIVE_WARNING_FLAGS, ...DEVICE_CODEGEN_FLAGS, '-DESP32=1', ...defines, '-I', STUBS_DIR, '-I', PROBE_DIR, '-I', caseDir, ...t.link.before, ...sources, ...t.link.after, '-o', elf]);
  return elf;
}

export interface ProbeResult {
  /** counter units per instruction (1 on RV32 under -icount; about 5.12 on the Xtensa sim) */
  unitsPerInstruction: number;
  /** instructions for one mqsec_x25519 (the core, without the XS glue) */
  instructions: number;
  cases: string[];
  iterate: Record<number, string>;
  errors: string[];
  /** Xtensa: instructions one __muldi3 product costs in a loop, beyond a copy */
  muldi3CallInstructions?: number;
  /** Xtensa with countCalls: __muldi3 calls per X25519 */
  muldi3Calls?: number;
  /** QEMU wall time, ms */
  wallMs: number;
}

/** Runs the probe under QEMU (killed after timeoutMs) and parses what it printed; throws unless it printed "done" and exited 0. */
export function runProbe(isa: Isa, elf: string, timeoutMs = 180_000): Promise<ProbeResult> {
  const t = TOOLCHAINS[isa];
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(t.qemu, ['-nographic', '-monitor', 'none', '-serial', 'none', ...t.qemuArgs(elf)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const wallMs = performance.now() - started;
      const text = t.console === 'stdout' ? out : err;
      if (code !== 0 || !/^done\r?$/m.test(text)) {
        reject(new Error(`${t.qemu} ${elf}: exit ${code ?? signal} after ${Math.round(wallMs)} ms\n${out.slice(-2000)}\n${err.slice(-2000)}`));
        return;
      }
      try {
        resolve(parseProbeOutput(text, wallMs));
      } catch (e) {
        reject(e);
      }
    });
  });
}

export function parseProbeOutput(out: string, wallMs = 0): ProbeResult {
  const hex = (s: string | undefined) => {
    if (s === undefined || !/^[0-9a-f]{8}$/.test(s)) throw new Error(`probe output: expected a 32-bit hex number, got ${s}`);
    return parseInt(s, 16);
  };
  let empty: number | undefined;
  let nops: number | undefined;
  const counts: number[] = [];
  const cases: string[] = [];
  const iterate: Record<number, string> = {};
  let errors: string[] = [];
  let muldi3Loop: number | undefined;
  let copyLoop: number | undefined;
  let muldi3Calls: number | undefined;
  for (const line of out.split('\n')) {
    const [key, ...f] = line.trim().split(' ');
    if (key === 'calibration') [empty, nops] = [hex(f[0]), hex(f[1])];
    else if (key === 'instructions') counts.push(hex(f[0]));
    else if (key === 'case') cases[hex(f[0])] = f[1]!;
    else if (key === 'iterate') iterate[hex(f[0])] = f[1]!;
    else if (key === 'errors') errors = f;
    else if (key === 'muldi3-loop') muldi3Loop = hex(f[0]);
    else if (key === 'copy-loop') copyLoop = hex(f[0]);
    else if (key === 'muldi3-calls') muldi3Calls = hex(f[0]);
  }
  if (empty === undefined || nops === undefined || counts.length !== 2) throw new Error(`probe output incomplete:\n${out.slice(0, 2000)}`);
  const unitsPerInstruction = (nops - empty) / 10_000;
  // the same computation twice costs the same under -icount; CCOUNT's scaling may round one unit either way
  if (Math.abs(counts[0]! - counts[1]!) > Math.ceil(unitsPerInstruction)) throw new Error(`probe: two counts of the same X25519 differ (${counts[0]} vs ${counts[1]})`);
  const result: ProbeResult = {
    unitsPerInstruction,
    instructions: Math.round((Math.min(counts[0]!, counts[1]!) - empty) / unitsPerInstruction),
    cases,
    iterate,
    errors,
    wallMs,
  };
  if (muldi3Loop !== undefined && copyLoop !== undefined) result.muldi3CallInstructions = (muldi3Loop - copyLoop) / unitsPerInstruction / 1000;
  if (muldi3Calls !== undefined) result.muldi3Calls = muldi3Calls;
  return result;
}

/**
 * Cycles per instruction assumed for the millisecond estimates (bench/RESULTS.md
 * gives the sources): straight integer code retires about 0.8 operations per
 * clock on the ESP32-C3 at 160 MHz and about 1 per clock on the ESP32 at
 * 240 MHz (integer add/multiply throughput measured on the chips, WLED issue
 * #4206).
 */
export const CPI = { esp32c3: 1.25, esp32: 1.0 } as const;
export const CLOCK_MHZ = { esp32c3: 160, esp32: 240 } as const;

export interface NativeX25519Figures {
  /** instructions per X25519 as run: RV32IMC, and Xtensa on the lx106 core (software 64-bit products) */
  x25519_instructions: { rv32imc: number; xtensa: number };
  /** the lx106's software products: calls per X25519 and instructions per call (beyond a copy) */
  xtensa_lx106_muldi3: { calls: number; instructions_per_call: number };
  /** the ESP32's LX6: lx106 count with each __muldi3 call replaced by mull + mulsh */
  xtensa_lx6_instructions_estimate: number;
  /** instructions x CPI / clock */
  x25519_ms_estimate: { esp32c3_160mhz: number; esp32_240mhz: number };
  cpi: { esp32c3: number; esp32: number };
  /** the same for the sixteen-limb reference field, and the ratio reference / device field */
  reference_field16_instructions: { rv32imc: number; xtensa: number };
  speedup_vs_field16: { rv32imc: number; xtensa: number };
}

/** ESP32 (LX6) estimate from an lx106 count: each __muldi3 call's cost replaced by two multiply instructions. */
export function lx6Estimate(lx106Instructions: number, calls: number, perCall: number): number {
  return Math.round(lx106Instructions - calls * (perCall - 2));
}

export function msEstimate(instructions: number, cpi: number, mhz: number): number {
  return Math.round((instructions * cpi) / (mhz * 1000) * 10) / 10;
}

/** Instruction counts of one X25519 per ISA and field, and the ESP32 estimates (`mqsec bench`). */
export async function measureNativeX25519(): Promise<NativeX25519Figures> {
  for (const isa of ISAS) {
    const m = missingTools(isa);
    if (m) throw new Error(m);
  }
  const dir = mkdtempSync(join(tmpdir(), 'mqsec-isa-bench-'));
  try {
    const [rv10, rv16, xt10, xt16, xtCalls] = await Promise.all([
      runProbe('rv32imc', buildProbe('rv32imc', dir, { field: 10 }, 'f10')),
      runProbe('rv32imc', buildProbe('rv32imc', dir, { field: 16 }, 'f16')),
      runProbe('xtensa', buildProbe('xtensa', dir, { field: 10 }, 'f10')),
      runProbe('xtensa', buildProbe('xtensa', dir, { field: 16 }, 'f16')),
      runProbe('xtensa', buildProbe('xtensa', dir, { field: 10, countCalls: true }, 'f10-calls')),
    ]);
    const perCall = round2(xt10.muldi3CallInstructions!);
    const lx6 = lx6Estimate(xt10.instructions, xtCalls.muldi3Calls!, perCall);
    return {
      x25519_instructions: { rv32imc: rv10.instructions, xtensa: xt10.instructions },
      xtensa_lx106_muldi3: { calls: xtCalls.muldi3Calls!, instructions_per_call: perCall },
      xtensa_lx6_instructions_estimate: lx6,
      x25519_ms_estimate: { esp32c3_160mhz: msEstimate(rv10.instructions, CPI.esp32c3, CLOCK_MHZ.esp32c3), esp32_240mhz: msEstimate(lx6, CPI.esp32, CLOCK_MHZ.esp32) },
      cpi: { ...CPI },
      reference_field16_instructions: { rv32imc: rv16.instructions, xtensa: xt16.instructions },
      speedup_vs_field16: { rv32imc: round2(rv16.instructions / rv10.instructions), xtensa: round2(xt16.instructions / xt10.instructions) },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
