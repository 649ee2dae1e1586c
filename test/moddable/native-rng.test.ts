/**
 * The native RNG module (firmware/platform/moddable/native/mqsec-random.c)
 * compiled by the host C compiler against a stub of the XS host API
 * (test/moddable/stubs), then run: the desktop getrandom() path fills
 * buffers of any size, argument errors surface as XS exceptions, the ESP32
 * branch (esp_fill_random) compiles, and a platform without a secure source
 * does not build at all.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NATIVE_WARNING_FLAGS } from '../../tools/native-isa.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const stubs = join(here, 'stubs');
const source = fileURLToPath(new URL('../../firmware/platform/moddable/native/mqsec-random.c', import.meta.url));
const cc = spawnSync('cc', ['--version']).status === 0 ? 'cc' : undefined;
const onLinux = process.platform === 'linux';
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'mqsec-rng-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const flags = [...NATIVE_WARNING_FLAGS, '-D_GNU_SOURCE', '-I', stubs];

describe.skipIf(!cc || !onLinux)('native RNG C module (host cc, stub XS API)', () => {
  it('compiles warning-free and fills buffers from getrandom()', () => {
    const exe = join(dir, 'rng');
    execFileSync(cc!, [...flags, source, join(stubs, 'driver.c'), '-o', exe]);
    const r = JSON.parse(execFileSync(exe).toString());
    expect(r.a).toBe('ok');
    expect(r.b).toBe('ok');
    expect(r.sameAB).toBe(0); // two draws differ
    expect(r.zerosA).toBeLessThan(8); // 32 random bytes: P(>= 8 zeros) is negligible
    expect(r.big).toBe('ok'); // > 256 bytes: several getrandom() calls
    expect(r.bigMaxBucket).toBeLessThan(60); // 4099 bytes over 256 values: mean 16, an unfilled buffer would put 4099 in bucket 0
    expect(r.empty).toBe('ok');
    expect(r.noArg).toBe('TypeError');
    expect(r.number).toBe('TypeError');
  });

  it('the ESP32 branch (esp_fill_random) compiles against the ESP-IDF signature', () => {
    execFileSync(cc!, [...flags, '-fsyntax-only', '-DESP32=1', '-U__linux__', source]);
  });

  it('the ESP32 deep-sleep module compiles against the ESP-IDF signatures', () => {
    const sleepSource = fileURLToPath(new URL('../../firmware/platform/moddable/native/mqsec-sleep.c', import.meta.url));
    execFileSync(cc!, [...flags, '-fsyntax-only', '-DESP32=1', sleepSource]);
  });

  it('refuses to build where there is no secure source (no silent weak fallback)', () => {
    const r = spawnSync(cc!, [...flags, '-fsyntax-only', '-U__linux__', '-U__APPLE__', source]);
    expect(r.status).not.toBe(0);
    expect(r.stderr.toString()).toMatch(/no cryptographically secure random source/);
  });
});
