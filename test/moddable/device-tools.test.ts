/**
 * Provisioning data for the firmware build (firmware/app/device-config.ts,
 * tools/moddable.ts) and the `device-desktop` / `hil` commands' behaviour
 * when no SDK or board is present (one "skipped: ..." line, success).
 */
import { describe, it, expect, afterAll } from 'vitest';
import { mkdtempSync, rmSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseDeviceConfig, deviceKeyBytes } from '../../firmware/app/device-config.js';
import { writeDeviceConfigModule, loadDeviceConfig, findSdk, watch, deviceFigures, heapReadings, instrumentSpans, instrumentFigures, APP_MANIFEST } from '../../tools/moddable.js';
import { runDesktop, desktopConfig } from '../../tools/desktop-run.js';
import { resolveManifest, boardFragmentSettings } from '../../tools/manifest-model.js';
import { runHil } from '../../tools/hil.js';
import { runLinkCheck } from '../../tools/link-check.js';
import { deviceCheckCommand } from '../../cli/commands/device-check.js';
import { buildProgram } from '../../cli/main.js';
import { deviceDesktopCommand } from '../../cli/commands/device-desktop.js';
import { hilCommand } from '../../cli/commands/hil.js';

const dir = mkdtempSync(join(tmpdir(), 'mqsec-devtools-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const KEY = 'a1'.repeat(32);

describe('device config', () => {
  it('accepts the `mqsec device add --json` config file shape and flat/alias variants', () => {
    expect(parseDeviceConfig({ id: 'dev-1', key: KEY, broker: { host: '127.0.0.1', port: 1883 } })).toEqual({ id: 'dev-1', key: KEY, broker: { host: '127.0.0.1', port: 1883 } });
    expect(parseDeviceConfig({ deviceId: 'dev-1', deviceKey: KEY.toUpperCase(), host: 'broker.lan' })).toEqual({ id: 'dev-1', key: KEY, broker: { host: 'broker.lan', port: 1883 } });
    expect(parseDeviceConfig({ id: 'd', key: KEY, broker: { host: 'h', port: 1 }, wifi: { ssid: 'lab', password: 'secret-pw' } }).wifi).toEqual({ ssid: 'lab', password: 'secret-pw' });
    expect(deviceKeyBytes(parseDeviceConfig({ id: 'd', key: KEY, host: 'h' }))).toEqual(new Uint8Array(32).fill(0xa1));
  });
  it('refuses bad configs with MALFORMED and never echoes the key', () => {
    const bad: unknown[] = [
      null,
      { id: 'x'.repeat(24), key: KEY, host: 'h' },
      { id: 'a/b', key: KEY, host: 'h' },
      { id: 'd', key: KEY.slice(2), host: 'h' },
      { id: 'd', key: KEY, host: 'h', port: 70000 },
      { id: 'd', key: KEY, host: 'bad host' },
      { id: 'd', key: KEY, host: 'h', wifi: { ssid: '' } },
      { id: 'd', key: KEY, host: 'h', wifi: { ssid: 'x', password: 'short' } },
    ];
    for (const b of bad) {
      let err: any;
      try {
        parseDeviceConfig(b);
      } catch (e) {
        err = e;
      }
      expect(err?.code).toBe('MALFORMED');
      expect(String(err.message)).not.toContain('a1a1');
    }
  });
  it('writes the firmware config module (mode 0600) that evaluates to the checked config', async () => {
    const cfgPath = join(dir, 'device-config-dev-7.json');
    writeFileSync(cfgPath, JSON.stringify({ id: 'dev-7', key: KEY, broker: { host: '127.0.0.1', port: 1883 } }));
    const cfg = loadDeviceConfig(cfgPath, { port: 18830, ssid: 'lab', wifiPassword: 'longenough' });
    const file = writeDeviceConfigModule(cfg, join(dir, 'cfg'));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const mod = await import(pathToFileURL(file).href);
    expect(mod.default).toEqual({ id: 'dev-7', key: KEY, broker: { host: '127.0.0.1', port: 18830 }, wifi: { ssid: 'lab', password: 'longenough' } });
    expect(Object.isFrozen(mod.default)).toBe(true);
    expect(readFileSync(file, 'utf8')).toMatch(/do not commit/);
  });
});

describe('without an SDK or a board', () => {
  it('findSdk explains what is missing', () => {
    expect(findSdk({})).toEqual({ missing: expect.stringMatching(/MODDABLE is not set/) });
    expect(findSdk({ MODDABLE: dir })).toEqual({ missing: expect.stringMatching(/does not look like a Moddable SDK/) });
  });
  it('device-desktop prints one skipped line and succeeds', async () => {
    const out: string[] = [];
    const code = await runDesktop({}, { out: (l) => out.push(l), err: (l) => out.push(`ERR ${l}`) }, {});
    expect(code).toBe(0);
    expect(out).toEqual([expect.stringMatching(/^skipped: MODDABLE is not set/)]);
  });
  it('device-check prints one skipped line and succeeds', async () => {
    const out: string[] = [];
    const code = await runLinkCheck({}, { out: (l) => out.push(l), err: (l) => out.push(`ERR ${l}`) }, {});
    expect(code).toBe(0);
    expect(out).toEqual([expect.stringMatching(/^skipped: MODDABLE is not set/)]);
  });

  it('hil prints one skipped line and succeeds', async () => {
    const out: string[] = [];
    const code = await runHil({ port: join(dir, 'no-tty'), board: 'esp32' }, { out: (l) => out.push(l), err: (l) => out.push(`ERR ${l}`) }, {});
    expect(code).toBe(0);
    expect(out).toEqual([`skipped: no board at ${join(dir, 'no-tty')}`]);
  });
  it('the CLI commands do the same through commander', async () => {
    const saved = process.env.MODDABLE;
    delete process.env.MODDABLE;
    try {
      const out: string[] = [];
      const io = { out: (l: string) => out.push(l), err: (l: string) => out.push(`ERR ${l}`), readStdin: async () => '' };
      await buildProgram(io, [deviceDesktopCommand, hilCommand]).parseAsync(['node', 'mqsec', 'device-desktop']);
      await buildProgram(io, [deviceCheckCommand]).parseAsync(['node', 'mqsec', 'device-check']);
      await buildProgram(io, [deviceDesktopCommand, hilCommand]).parseAsync(['node', 'mqsec', 'hil', '--port', join(dir, 'no-tty'), '--board', 'esp32c3']);
      expect(out).toEqual([expect.stringMatching(/^skipped: /), expect.stringMatching(/^skipped: /), expect.stringMatching(/^skipped: no board/)]);
      await expect(buildProgram(io, [deviceCheckCommand]).parseAsync(['node', 'mqsec', 'device-check', '--platform', 'esp8266'])).rejects.toThrow(/unknown platform/);
      await expect(buildProgram(io, [hilCommand]).parseAsync(['node', 'mqsec', 'hil', '--board', 'esp8266'])).rejects.toThrow(/unknown board/);
    } finally {
      if (saved !== undefined) process.env.MODDABLE = saved;
    }
  });
});

describe('desktop run settings and figures', () => {
  it('--no-group-keys reaches the built board config as groupKeys false, the lin board settings unchanged', () => {
    const lin = boardFragmentSettings(APP_MANIFEST, 'lin');
    for (const groupKeys of [undefined, true, false]) {
      // the wrapper manifest buildApp writes: the app manifest plus the extra config
      const wrapper = join(dir, `wrapper-${String(groupKeys)}.json`);
      writeFileSync(wrapper, JSON.stringify({ include: [APP_MANIFEST], config: desktopConfig({ groupKeys }, '/fs/') }));
      const mqsec = resolveManifest(wrapper, 'lin').config.mqsec as Record<string, unknown>;
      expect(mqsec.groupKeys).toBe(groupKeys !== false);
      expect(mqsec.storagePauseMs).toBe(3000);
      for (const [k, v] of Object.entries(lin)) expect(mqsec[k]).toEqual(v);
    }
  });
  it('--e2e with group keys off is refused before anything is built', async () => {
    const out: string[] = [];
    const code = await runDesktop({ e2e: true, groupKeys: false }, { out: (l) => out.push(l), err: (l) => out.push(`ERR ${l}`) }, {});
    expect(code).toBe(1);
    expect(out).toEqual(['ERR device-desktop: --e2e needs group keys on']);
    const io = { out: (l: string) => out.push(l), err: (l: string) => out.push(`ERR ${l}`), readStdin: async () => '' };
    await expect(buildProgram(io, [deviceDesktopCommand]).parseAsync(['node', 'mqsec', 'device-desktop', '--e2e', '--no-group-keys'])).rejects.toThrow(/needs group keys/);
  });
  it('heap lines are tagged with the handshake before them and reported at boot, after each phase, last and highest', () => {
    const lines = [
      'mqsec selftest ok 1 ms',
      'mqsec state boot',
      'mqsec heap slots=60000 chunks=27000',
      'mqsec state connecting',
      'mqsec phase 1 ok 43 ms',
      'mqsec heap slots=47000 chunks=30000',
      'mqsec heap slots=52000 chunks=22000',
      'mqsec phase 2 ok 41 ms',
      'mqsec heap slots=45000 chunks=25000',
      'mqsec heap slots=oops',
    ];
    expect(heapReadings(lines)).toEqual([
      { slots: 60000, chunks: 27000, after: 'boot' },
      { slots: 47000, chunks: 30000, after: 'phase 1' },
      { slots: 52000, chunks: 22000, after: 'phase 1' },
      { slots: 45000, chunks: 25000, after: 'phase 2' },
    ]);
    expect(deviceFigures(lines)).toContain(
      'device JS heap: at boot slots=60000 chunks=27000, after phase 1 and a reading slots=47000 chunks=30000, after phase 2 slots=45000 chunks=25000, ' +
        'last slots=45000 chunks=25000, highest slots=60000 chunks=30000 (bytes used, 4 readings, XS instrumentation)',
    );
    expect(deviceFigures(['mqsec heap slots=1 chunks=2'])[0]).toMatch(/after phase 1 and a reading none, after phase 2 none/);
  });
});

describe('desktop host instrumentation rows', () => {
  // rows as the SDK 8.2.3 desktop host printed them in an instrumented run (columns cut to what is read, plus one)
  const key = 'instruments key: Network sockets,Chunk used,Chunk available,Slot used,Slot available,Garbage collections';
  const lines = [
    key,
    'instruments: 0,0,32768,896,65504,0',
    'mqsec heap slots=22688 chunks=4672',
    'instruments: 1,28864,32768,42624,65504,10',
    'mqsec phase 1 ok 249 ms',
    'instruments: 0,28072,32768,26720,65504,20',
    'mqsec phase 2 ok 83 ms',
    'instruments: 1,31840,32768,55904,65504,14',
    'instruments: 1,11048,32768,45920,65504,1',
    'instruments: 1,11048,40960,45920,98272,0',
    'instruments: 1,2,3',
  ];
  it('groups rows by the handshake before them, skips the empty first row and malformed rows', () => {
    expect(instrumentSpans(lines)).toEqual([
      { after: 'boot', rows: 1, slotUsed: [42624, 42624], chunkUsed: [28864, 28864], slotAvailable: 65504, chunkAvailable: 32768 },
      { after: 'phase 1', rows: 1, slotUsed: [26720, 26720], chunkUsed: [28072, 28072], slotAvailable: 65504, chunkAvailable: 32768 },
      { after: 'phase 2', rows: 3, slotUsed: [45920, 55904], chunkUsed: [11048, 31840], slotAvailable: 98272, chunkAvailable: 40960 },
    ]);
    expect(instrumentFigures(lines)[2]).toBe(
      'device heap after the broker restart and phase 2 (readings): slot used 45920-55904 B, chunk used 11048-31840 B, reserved 98272 B slots + 40960 B chunks (3 instrumentation rows, 64-bit host: 32-byte slots)',
    );
  });
  it('reports nothing without the key line or with columns missing', () => {
    expect(instrumentSpans(lines.slice(1))).toEqual([]);
    expect(instrumentSpans(['instruments key: Slot used,Chunk used', 'instruments: 5,6'])).toEqual([]);
  });
});

describe('watching the simulator process', () => {
  it('a crash fails the wait at once, with the signal and the last output', async () => {
    const w = watch('sh', ['-c', 'echo "mqsec state connecting"; sleep 0.2; kill -SEGV $$'], process.env);
    try {
      expect(await w.waitFor(/^mqsec state connecting/, 5000)).toBe('mqsec state connecting');
      const started = Date.now();
      await expect(w.waitFor(/^mqsec phase 2 ok/, 30_000)).rejects.toThrow(/SIGSEGV.*last output: mqsec state connecting/);
      expect(Date.now() - started).toBeLessThan(10_000); // not the 30 s wait (a hang guard, not a timing claim)
      await expect(w.waitFor(/anything/, 30_000)).rejects.toThrow(/SIGSEGV/);
    } finally {
      await w.stop();
    }
  });
});
