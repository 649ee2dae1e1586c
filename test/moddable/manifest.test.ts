/**
 * The Moddable manifests (manifest.json, boards/*, the native modules'
 * manifest), resolved per platform with the SDK's merge rules
 * (tools/manifest-model.ts; `npm run device:check` compares that model with
 * what the real mcconfig generates). Checked without the SDK:
 *
 *  - the device image is what the device runs: the module graph walked from
 *    `creation.main` through the platform's module map equals the set of
 *    modules the manifests compile for that platform (nothing compiled that
 *    nothing imports, e.g. the broker side or noble's BigInt curves, whose
 *    package imports the manifest does not map), with no wildcards;
 *  - every module of that graph is preloaded (flash, not the ~150 KB JS heap),
 *    but the listed ones. mcconfig matches `preload` wildcards against
 *    JavaScript files only (tools/mcconfig.js, filterPreload), so TypeScript
 *    modules must be named; preloaded ArrayBuffers are read-only at run time,
 *    which is why noble's hash modules are not part of the build at all;
 *  - no preloaded module imports an SDK module that keeps mutable JavaScript
 *    state on that platform: preloading freezes it into the image (the
 *    desktop `preference` module's value cache did exactly that: nothing was
 *    ever saved);
 *  - each board's settings (`config.mqsec`) reach its build: the app
 *    manifest's own `config` is merged after its includes and would override
 *    every board fragment.
 */
import { describe, it, expect } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { REPO_ROOT } from '../../tools/moddable.js';
import { matchPlatform, mergeProperties, readGeneratedConfig, resolveManifest, type ResolvedManifest } from '../../tools/manifest-model.js';

const PLATFORMS = ['esp32', 'esp32/esp32s3', 'esp32/esp32c3', 'lin'] as const;
const APP = join(REPO_ROOT, 'manifest.json');

const NOT_PRELOADED: Record<string, string> = {
  'firmware/platform/moddable/main': 'the app entry: runs at boot by design',
};

/**
 * SDK modules with module-level JavaScript state on a platform (read from the
 * SDK sources, modules/...): a preloaded module importing one freezes that
 * state into the image.
 *  - lin `preference` (modules/files/preference/lin/preference.js): values in
 *    a static `#cache` object loaded from a JSON file when the module runs.
 * On ESP32, `preference` (esp32/modPreference.c), `file`, `timer`, `time`,
 * `net`, `wifi`, `crypt`, `instrumentation` and the ECMA-419 TCP socket are
 * native functions or classes without JavaScript state; see docs/firmware.md.
 */
const STATEFUL_SDK_MODULES: Record<string, string[]> = {
  lin: ['preference'],
};

interface Graph {
  /** module name -> source file */
  modules: Map<string, string>;
  /** module name -> SDK (or generated) modules it imports */
  external: Map<string, string[]>;
}

function sourceFile(base: string): string | undefined {
  return ['.ts', '.js'].map((e) => base + e).find((f) => existsSync(f));
}

/** The source base a module name maps to: an exact entry, or a `dir/*` wildcard entry. */
function lookup(resolved: ResolvedManifest, name: string): string | undefined {
  const exact = resolved.modules.get(name);
  if (exact !== undefined) return exact;
  for (const [k, v] of resolved.modules) if (k.endsWith('/*') && name.startsWith(k.slice(0, -1))) return v.slice(0, -1) + name.slice(k.length - 1);
  return undefined;
}

/** Every module name the manifests compile (wildcards expanded to the .ts/.js files they match). */
function compiledNames(resolved: ResolvedManifest): string[] {
  return [...resolved.modules].flatMap(([k, v]) =>
    k.endsWith('/*') && existsSync(v.slice(0, -2))
      ? readdirSync(v.slice(0, -2))
          .filter((f) => /\.(ts|js)$/.test(f) && !f.endsWith('.d.ts'))
          .map((f) => k.slice(0, -1) + f.replace(/\.(ts|js)$/, ''))
      : [k],
  );
}

/** Value imports (not `import type`) from the device's main module, transitively, resolved by module name as XS does. */
function deviceGraph(resolved: ResolvedManifest, main: string): Graph {
  const g: Graph = { modules: new Map(), external: new Map() };
  const visit = (name: string, from: string) => {
    if (g.modules.has(name)) return;
    const base = lookup(resolved, name);
    const file = base === undefined ? undefined : sourceFile(base);
    expect(file, `${from} imports ${name}, which the manifests do not map to a source file`).toBeDefined();
    g.modules.set(name, file!);
    const ext: string[] = [];
    g.external.set(name, ext);
    const src = readFileSync(file!, 'utf8');
    for (const m of src.matchAll(/^\s*(?:import|export)\s+(?!type\b)(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]/gm)) {
      const spec = m[1];
      // Relative specifiers resolve against the importing module's *name* (XS drops `.js`).
      const target = (spec.startsWith('.') ? posix.normalize(posix.join(posix.dirname(name), spec)) : spec).replace(/\.js$/, '');
      if (spec.startsWith('.') || lookup(resolved, target) !== undefined) visit(target, name);
      else ext.push(spec);
    }
  };
  visit(main, 'creation.main');
  return g;
}

const appManifest = JSON.parse(readFileSync(APP, 'utf8')) as { creation: { main: string }; config?: Record<string, unknown>; modules: Record<string, string> };
const perPlatform = new Map(
  PLATFORMS.map((p) => {
    const resolved = resolveManifest(APP, p);
    return [p, { resolved, graph: deviceGraph(resolved, appManifest.creation.main) }] as const;
  }),
);

describe('manifests resolved per platform (SDK merge rules, no SDK needed)', () => {
  it('the model follows mcmanifest: includes first, platform entry after the manifest, deep config merge', () => {
    expect(matchPlatform({ esp32: 1, lin: 2, '...': 3 }, 'esp32/esp32c3')).toBe(1);
    expect(matchPlatform({ esp32: 1, 'esp32/esp32c3': 4 }, 'esp32/esp32c3')).toBe(4);
    expect(matchPlatform({ esp32: 1, '...': 3 }, 'mac')).toBe(3);
    const t: Record<string, unknown> = { mqsec: { a: 1, b: { c: 1 } } };
    mergeProperties(t, { mqsec: { b: { d: 2 }, e: 3 } });
    expect(t).toEqual({ mqsec: { a: 1, b: { c: 1, d: 2 }, e: 3 } });
    const lin = perPlatform.get('lin')!.resolved.manifests.map((m) => m.slice(REPO_ROOT.length + 1));
    // the board fragment is merged after the defaults and before the app manifest
    expect(lin).toEqual(['firmware/platform/moddable/native/manifest.json', 'boards/defaults.json', 'boards/lin/manifest.json', 'manifest.json']);
  });

  it('each board gets its own settings (the app manifest sets none of them)', () => {
    expect(appManifest.config?.mqsec, 'config.mqsec in manifest.json would override every board').toBeUndefined();
    const mqsec = (p: string) => perPlatform.get(p as (typeof PLATFORMS)[number])!.resolved.config.mqsec as Record<string, unknown>;
    const summary = Object.fromEntries(PLATFORMS.map((p) => [p, [mqsec(p).board, mqsec(p).intervalS, mqsec(p).sleepMode, (mqsec(p).sensor as { kind: string }).kind]]));
    // docs/firmware.md, "Board settings"
    expect(summary).toEqual({
      esp32: ['esp32', 60, 'deep', 'sht3x'],
      'esp32/esp32s3': ['esp32s3', 60, 'deep', 'sht3x'],
      'esp32/esp32c3': ['esp32c3', 300, 'deep', 'system'],
      lin: ['lin', 5, 'wait', 'system'],
    });
    for (const p of PLATFORMS) expect(mqsec(p), p).toMatchObject({ client: 'firmware', logLevel: 'info', listenMs: 1500 });
  });

  it('reads a setting out of an mc.config.js as mcconfig writes it', () => {
    const text = '/* generated */\n\nexport default Object.freeze({\n\t"file": {\n\t\t"root": "/tmp/x/"\n\t},\n\t"mqsec": {\n\t\t"intervalS": 5,\n\t\t"s": "a,}\\"b"\n\t},\n\t"n": 3,\n}, true);\n';
    expect(readGeneratedConfig(text, 'mqsec')).toEqual({ intervalS: 5, s: 'a,}"b' });
    expect(readGeneratedConfig(text, 'n')).toBe(3);
    expect(readGeneratedConfig(text, 'absent')).toBeUndefined();
  });
});

describe.each(PLATFORMS)('device image for %s', (platform) => {
  const { resolved, graph } = perPlatform.get(platform)!;
  const names = [...graph.modules.keys()];

  it('walks the whole device app (firmware layers and the noble primitives it uses), and nothing of the broker side', () => {
    for (const layer of ['firmware/core/', 'firmware/crypto/', 'firmware/mqtt/', 'firmware/secure/', 'firmware/app/', 'firmware/platform/moddable/', '@noble/ciphers/', 'mqsec/']) {
      expect(names.some((n) => n.startsWith(layer)), layer).toBe(true);
    }
    expect(names).not.toContain('firmware/secure/server');
    expect(names.some((n) => n.startsWith('@noble/curves/') || n.startsWith('@noble/hashes/'))).toBe(false);
  });

  it('compiles exactly the modules the device loads: no wildcards, nothing unused', () => {
    const mapped = [...resolved.modules.keys()];
    expect(mapped.filter((n) => n.includes('*')), 'wildcard module maps compile whole directories').toEqual([]);
    expect(compiledNames(resolved).filter((n) => !graph.modules.has(n)), 'compiled but never imported').toEqual([]);
  });

  it('preloads every module the device loads, except the listed ones, and nothing else', () => {
    const preload = new Set(resolved.preload);
    expect(resolved.preload.filter((p) => p.includes('*')), 'wildcards do not preload TypeScript modules').toEqual([]);
    expect(names.filter((n) => !preload.has(n) && !(n in NOT_PRELOADED))).toEqual([]);
    for (const n of Object.keys(NOT_PRELOADED)) expect(preload.has(n), `${n} must not be preloaded`).toBe(false);
    expect(resolved.preload.filter((p) => !graph.modules.has(p))).toEqual([]);
  });

  it('no preloaded module imports an SDK module that keeps JavaScript state on this platform', () => {
    const stateful = STATEFUL_SDK_MODULES[platform.split('/')[0]] ?? [];
    const preload = new Set(resolved.preload);
    const offenders = [...graph.external].flatMap(([name, ext]) => (preload.has(name) ? ext.filter((e) => stateful.includes(e)).map((e) => `${name} -> ${e}`) : []));
    expect(offenders).toEqual([]);
  });
});

describe('the preference bug this guards against', () => {
  it('the checks above catch a preloaded module importing the desktop preference module', () => {
    // The layout before the fix: services (preloaded) imported `preference` directly.
    const resolved = resolveManifest(APP, 'lin');
    const graph = deviceGraph(resolved, appManifest.creation.main);
    const services = graph.external.get('firmware/platform/moddable/services')!;
    expect(services).not.toContain('preference');
    const before = new Map(graph.external);
    before.set('firmware/platform/moddable/services', [...services, 'preference']);
    const offenders = [...before].filter(([n, ext]) => resolved.preload.includes(n) && ext.includes('preference'));
    expect(offenders.map(([n]) => n)).toEqual(['firmware/platform/moddable/services']);
  });

  it('the board modules exist for every platform and are typed for the modules that import them', () => {
    for (const p of PLATFORMS) {
      const { resolved } = perPlatform.get(p)!;
      for (const board of ['board-sensor', 'board-sleep', 'board-storage']) {
        expect(resolved.modules.get(`firmware/platform/moddable/${board}`), `${p} ${board}`).toBeDefined();
        expect(existsSync(join(REPO_ROOT, 'firmware/platform/moddable', `${board}.d.ts`))).toBe(true);
      }
    }
    expect(dirname(APP)).toBe(REPO_ROOT);
  });
});
