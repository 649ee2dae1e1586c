/**
 * manifest.json's preload list. Preloaded modules run at build time and stay
 * in flash; anything else is loaded into the ESP32's ~150 KB JS heap at boot.
 * Two SDK behaviours make the list easy to get wrong without noticing:
 *  - mcconfig matches `preload` wildcards against JavaScript files only, so
 *    `firmware/core/*` preloads none of the TypeScript modules: every module
 *    must be named (tools/mcconfig.js, filterPreload);
 *  - preloaded ArrayBuffers are read-only at run time, so a module that
 *    writes a module-level buffer (noble's SHA-256 message schedule, HKDF's
 *    counter byte) fails with "read-only buffer" when preloaded; the device
 *    suite therefore takes SHA-256 from the SDK's native digest and the
 *    noble hash modules are not part of the device build at all.
 * The test walks the device's import graph from the manifest's main module
 * and checks that every module in it is preloaded, or is one of the few
 * listed below with the reason it cannot be.
 */
import { describe, it, expect } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { REPO_ROOT } from '../../tools/moddable.js';

const NOT_PRELOADED: Record<string, string> = {
  'firmware/platform/moddable/main': 'the app entry: runs at boot by design',
  'mqsec/device-config': 'generated per device at build time (holds the device key)',
};

interface Manifest {
  creation: { main: string };
  modules: Record<string, string>;
  preload: string[];
  platforms: Record<string, { include?: string }>;
}

const manifest = JSON.parse(readFileSync(join(REPO_ROOT, 'manifest.json'), 'utf8')) as Manifest;
/** A board fragment's preload list, with the fragments it includes from this repository. */
function boardPreloads(fragment: string): string[] {
  const m = JSON.parse(readFileSync(fragment, 'utf8')) as { include?: string | string[]; preload?: string[] };
  const includes = ([] as string[]).concat(m.include ?? []).filter((i) => !i.startsWith('$('));
  return [...(m.preload ?? []), ...includes.flatMap((i) => boardPreloads(join(dirname(fragment), i)))];
}

/** Module specifier -> file, through the manifest's module map (exact names, then `dir/*` maps). */
function fileOf(spec: string): string | undefined {
  const name = spec.replace(/\.js$/, '');
  const exact = manifest.modules[name];
  const base = exact ?? Object.entries(manifest.modules).flatMap(([k, v]) => (k.endsWith('/*') && name.startsWith(k.slice(0, -1)) ? [v.slice(0, -1) + name.slice(k.length - 1)] : []))[0];
  if (!base) return undefined;
  for (const ext of ['.ts', '.js']) if (existsSync(join(REPO_ROOT, base + ext))) return join(REPO_ROOT, base + ext);
  return undefined;
}

/** The module name the manifest gives a file (what `preload` entries name). */
function nameOf(file: string): string {
  const rel = relative(REPO_ROOT, file).replace(/\.(ts|js)$/, '');
  if (rel.startsWith('node_modules/')) return rel.slice('node_modules/'.length);
  return rel;
}

/** Value imports (not `import type`) of the device's main module, transitively, as module names. */
function deviceModules(): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (file: string) => {
    const name = nameOf(file);
    if (out.has(name)) return;
    out.set(name, file);
    const src = readFileSync(file, 'utf8');
    for (const m of src.matchAll(/^\s*(?:import|export)\s+(?!type\b)(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]/gm)) {
      const spec = m[1];
      let target: string | undefined;
      if (spec.startsWith('.')) {
        const p = join(dirname(file), spec);
        target = [p.replace(/\.js$/, '.ts'), p].find((f) => existsSync(f));
        // board modules are mapped per platform under a name in this directory
        if (!target && /board-(sensor|sleep)\.js$/.test(spec)) continue;
      } else {
        target = fileOf(spec);
        if (!target) continue; // an SDK module (timer, net, embedded:io/...), preloaded or not by the SDK's own manifests
      }
      expect(target, `${nameOf(file)} imports ${spec}`).toBeDefined();
      visit(target!);
    }
  };
  visit(fileOf(manifest.creation.main)!);
  return out;
}

describe('manifest.json preload list', () => {
  const modules = deviceModules();

  it('walks the whole device app (firmware layers and the noble primitives it uses)', () => {
    const names = [...modules.keys()];
    for (const layer of ['firmware/core/', 'firmware/crypto/', 'firmware/mqtt/', 'firmware/secure/', 'firmware/app/', 'firmware/platform/moddable/', '@noble/ciphers/']) {
      expect(names.some((n) => n.startsWith(layer)), layer).toBe(true);
    }
    // the device never loads the broker side, nor noble's BigInt curves or its hashes (native code does those)
    expect(names).not.toContain('firmware/secure/server');
    expect(names.some((n) => n.startsWith('@noble/curves/') || n.startsWith('@noble/hashes/'))).toBe(false);
  });

  it('maps every module the device loads to its source file', () => {
    for (const [name, file] of modules) {
      if (name.startsWith('@noble/')) expect(fileOf(name), name).toBe(file);
      else expect(fileOf(name), `${name} is imported but not in the manifest's modules`).toBe(file);
    }
  });

  it('names every module the device loads, except the listed ones', () => {
    const preload = new Set(manifest.preload);
    expect(manifest.preload.filter((p) => p.includes('*')), 'wildcards do not preload TypeScript modules').toEqual([]);
    const missing = [...modules.keys()].filter((n) => !preload.has(n) && !(n in NOT_PRELOADED));
    expect(missing).toEqual([]);
    for (const n of Object.keys(NOT_PRELOADED)) expect(preload.has(n), `${n} must not be preloaded`).toBe(false);
  });

  it('preloads nothing the device does not load, and every board preloads its board modules', () => {
    const stale = manifest.preload.filter((p) => !modules.has(p));
    expect(stale).toEqual([]);
    for (const platform of ['esp32', 'esp32/esp32s3', 'esp32/esp32c3', 'lin']) {
      const include = manifest.platforms[platform]?.include;
      expect(include, platform).toBeDefined();
      const preload = boardPreloads(join(REPO_ROOT, include!));
      expect(preload, platform).toEqual(expect.arrayContaining(['firmware/platform/moddable/board-sensor', 'firmware/platform/moddable/board-sleep']));
    }
  });
});
