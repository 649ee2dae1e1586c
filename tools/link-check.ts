/**
 * `mqsec device-check`: the ESP32 builds checked as far as the host can take
 * them, without ESP-IDF or a board. For each ESP32 target, mcconfig resolves
 * the manifest (board fragment, SDK modules, native modules), every module is
 * compiled (TypeScript and xsc), and the XS linker `xsl` runs the preload: it
 * executes every preloaded module as the chip would at build time and emits
 * the ROM image as C (`mc.xs.c`). What is left for a real ESP32 build is the C
 * compile and link by ESP-IDF.
 *
 * Each board's settings are checked on the way: the `mqsec` entry of the
 * `mc.config.js` that mcconfig generates for the platform (lin included) must
 * hold every setting of the platform's board fragment, and equal what
 * tools/manifest-model.ts computes from the repository's manifests (the model
 * the SDK-free tests use): a board fragment whose settings do not reach its
 * build, or a model that drifted from the SDK, fails here.
 *
 * This catches what the desktop run cannot, because the desktop target
 * includes different SDK modules: an import the ESP32 manifests do not
 * provide (this check found that the SDK's `manifest_net` gives ESP32 builds
 * no legacy `wifi` module), a module that throws while preloading, a
 * preloaded module writing a frozen buffer at build time.
 *
 * How: mcconfig without `-m` writes the makefile; a small wrapper makefile
 * includes it and adds one target that depends on the compiled modules
 * ($(MODULES)) and runs the same `xsl` command line the SDK uses, into a
 * directory of ours. The SDK's makefile reads the ESP-IDF version at parse
 * time, so without IDF_PATH a stub git repository stands in for it; nothing
 * of ESP-IDF is used by these steps.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { toHex } from '../firmware/core/bytes.js';
import { boardFragmentSettings, readGeneratedConfig, resolveManifest } from './manifest-model.js';
import { APP_MANIFEST, buildApp, findSdk, isSdk, run, writeDeviceConfigModule } from './moddable.js';

export const ESP32_PLATFORMS = ['esp32', 'esp32/esp32s3', 'esp32/esp32c3'] as const;

/** Platforms whose generated board settings are compared with the manifest model. */
export const CONFIG_PLATFORMS = [...ESP32_PLATFORMS, 'lin'] as const;

/** The generated `config.mqsec` against the model's; a one-line verdict. */
function checkBoardSettings(platform: string, tmpDir: string): { ok: boolean; line: string } {
  const file = findFile(tmpDir, 'mc.config.js');
  if (!file) return { ok: false, line: `no mc.config.js generated` };
  const got = readGeneratedConfig(readFileSync(file, 'utf8'), 'mqsec') as Record<string, unknown> | undefined;
  if (got === undefined) return { ok: false, line: 'no mqsec settings in mc.config.js' };
  // The board fragment's own settings must reach the build unchanged ...
  const board = boardFragmentSettings(APP_MANIFEST, platform);
  const lost = Object.keys(board).filter((k) => !isDeepStrictEqual(got[k], board[k]));
  if (lost.length) return { ok: false, line: `the board's ${lost.map((k) => `${k}=${JSON.stringify(board[k])}`).join(', ')} did not reach the build (got ${lost.map((k) => JSON.stringify(got[k])).join(', ')})` };
  // ... and the whole entry must be what the SDK-free model computes (the model the npm tests use).
  const want = resolveManifest(APP_MANIFEST, platform).config.mqsec;
  if (!isDeepStrictEqual(got, want)) return { ok: false, line: `board settings ${JSON.stringify(got)} differ from the manifest model's ${JSON.stringify(want)}` };
  const m = got as { board: string; intervalS: number; sleepMode: string };
  return { ok: true, line: `board settings reach the build (board ${m.board}, every ${m.intervalS} s, sleep ${m.sleepMode})` };
}

export interface LinkCheckOptions {
  platforms?: readonly string[];
  keep?: boolean;
  verbose?: boolean;
  /** Only the board-settings check (mcconfig writes the makefile and mc.config.js; nothing is compiled). */
  settingsOnly?: boolean;
}

interface Io {
  out(line: string): void;
  err(line: string): void;
}

function findFile(dir: string, name: string): string | undefined {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isFile() && e.name === name) return p;
    if (e.isDirectory()) {
      const f = findFile(p, name);
      if (f) return f;
    }
  }
  return undefined;
}

/** A git repository with one tag: enough for the SDK makefile's `git describe` of IDF_PATH. */
function stubIdf(dir: string): string | undefined {
  mkdirSync(dir, { recursive: true });
  const git = (...args: string[]) => spawnSync('git', ['-c', 'user.email=check@mqsec.invalid', '-c', 'user.name=mqsec', ...args], { cwd: dir }).status === 0;
  return git('init', '-q') && git('commit', '-q', '--allow-empty', '-m', 'stub') && git('tag', 'v5.0.0') ? dir : undefined;
}

export async function runLinkCheck(o: LinkCheckOptions, io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const sdk = findSdk(env);
  if (!isSdk(sdk)) {
    io.out(`skipped: ${sdk.missing}`);
    return 0;
  }
  const work = mkdtempSync(join(tmpdir(), 'mqsec-link-'));
  let failed = 0;
  try {
    const idfPath = env.IDF_PATH || stubIdf(join(work, 'idf-stub'));
    if (!idfPath) {
      io.out('skipped: git is needed to stand in for ESP-IDF');
      return 0;
    }
    const configDir = join(work, 'config');
    // A throw-away identity: the check never talks to a broker.
    writeDeviceConfigModule({ id: 'check-0001', key: toHex(crypto.getRandomValues(new Uint8Array(32))), broker: { host: '192.0.2.1', port: 1883 }, wifi: { ssid: 'check' } }, configDir);
    for (const platform of o.platforms ?? CONFIG_PLATFORMS) {
      const out = join(work, platform.replace('/', '_'));
      const xslOut = join(out, 'xsl');
      mkdirSync(xslOut, { recursive: true });
      const lines: string[] = [];
      const onLine = (l: string) => {
        lines.push(l);
        if (o.verbose) io.out(`  ${platform}: ${l}`);
      };
      const built = await buildApp({ sdk, platform, outDir: out, configDir, makefileOnly: true, env: { IDF_PATH: idfPath }, onLine });
      const makefile = built.code === 0 ? findFile(join(out, 'tmp'), 'makefile') : undefined;
      if (!makefile) {
        io.err(`device-check ${platform}: mcconfig failed (${lines.filter((l) => /error/i.test(l)).slice(-1)[0] ?? `exit ${built.code}`})`);
        failed++;
        continue;
      }
      const settings = checkBoardSettings(platform, join(out, 'tmp'));
      if (!settings.ok) {
        io.err(`device-check ${platform}: FAIL (${settings.line})`);
        failed++;
        continue;
      }
      io.out(`device-check ${platform}: ${settings.line}`);
      if (platform === 'lin' || o.settingsOnly) continue; // the desktop build is checked by running it (device-desktop)
      const wrapper = join(out, 'link-check.mk');
      writeFileSync(wrapper, `include ${makefile}\nmqsec-link-check: $(MODULES)\n\txsl -b $(MODULES_DIR) -o ${xslOut} $(PRELOADS) $(STRIPS) $(CREATION) $(MODULES)\n`);
      const code = await run('make', ['-f', wrapper, 'mqsec-link-check'], { cwd: dirname(makefile), env: built.env, onLine });
      const image = join(xslOut, 'mc.xs.c');
      if (code !== 0 || !existsSync(image)) {
        const why = lines.filter((l) => /error|###/i.test(l) && !/warning/i.test(l)).slice(-3).join(' | ');
        io.err(`device-check ${platform}: FAIL (${why || `make exit ${code}`})`);
        failed++;
        continue;
      }
      // xsl's summary line, e.g. "### 1420 instances, 2264 keys, 67 colors, 0 holes"
      const summary = lines.find((l) => /^### \d+ instances/.test(l))?.slice(4) ?? 'no summary';
      const warnings = lines.filter((l) => l.startsWith('### warning')).length;
      io.out(`device-check ${platform}: ok — modules compiled and preloaded by xsl (${summary}; ${warnings} notes on objects left unfrozen), ROM image ${Math.round(statSync(image).size / 1024)} KB of C`);
    }
  } finally {
    if (o.keep) io.out(`device-check: kept ${work}`);
    else rmSync(work, { recursive: true, force: true });
  }
  if (failed) return 1;
  io.out(o.settingsOnly ? 'device-check: PASS (board settings only)' : 'device-check: PASS (the ESP-IDF compile and link of the C parts is not part of this check)');
  return 0;
}
