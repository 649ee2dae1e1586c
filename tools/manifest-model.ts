/**
 * The repository's Moddable manifests (manifest.json, boards/*, the native
 * modules' manifest) resolved for one platform the way the SDK's mcconfig
 * does it, without the SDK: which `config`, `modules` and `preload` a build
 * for that platform gets from this repository. Manifests of the SDK itself
 * (`$(MODDABLE)/...`, `$(MODULES)/...` includes) are left out.
 *
 * Rules taken from the SDK's tools/mcmanifest.js (parseManifest,
 * includeManifestPath, mergeManifest, mergePlatform, mergeProperties,
 * matchPlatform):
 *  - a manifest's `include`s are parsed, depth first and in order, before the
 *    manifest itself, and the matching `platforms` entry's `include` is
 *    appended to that list (so it comes after the manifest's own includes);
 *    a manifest already included is not included again;
 *  - manifests are then merged in that order: a manifest's top-level
 *    properties, then its matching `platforms` entry. `config` is merged
 *    property by property (deeply), later manifests winning; `modules` and
 *    `preload` accumulate;
 *  - `platforms` matching tries the full name (`esp32/esp32c3`), then its
 *    prefixes (`esp32`), then "...".
 * Hence a setting in the app manifest's own `config` overrides every board
 * fragment (they are its includes): board settings must not be set there.
 *
 * `npm run device:check` compares this model with the `mc.config.js` the
 * real mcconfig generates for each platform, so the model cannot drift from
 * the SDK unnoticed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

interface ManifestSection {
  include?: string | string[];
  config?: Record<string, unknown>;
  modules?: Record<string, string | string[]>;
  preload?: string | string[];
  platforms?: Record<string, ManifestSection>;
  error?: string;
}

export interface ResolvedManifest {
  /** The repository manifests in merge order (absolute paths). */
  manifests: string[];
  config: Record<string, unknown>;
  /** Module name -> absolute source path without extension (wildcards kept as written). */
  modules: Map<string, string>;
  preload: string[];
  /** `error` of a matching platforms entry (an unsupported platform). */
  errors: string[];
}

export function matchPlatform<T>(platforms: Record<string, T>, fullPlatform: string): T | undefined {
  const parts = fullPlatform.split('/');
  while (parts.length) {
    const partial = parts.join('/');
    for (const n of Object.keys(platforms)) {
      if (n.endsWith('/*') ? partial.startsWith(n.slice(0, -1)) : n.startsWith('*/') ? partial.endsWith(n.slice(1)) : partial === n) return platforms[n];
    }
    parts.length -= 1;
  }
  return platforms['...'];
}

/** Deep merge as mcmanifest's mergeProperties: objects merge, anything else replaces. */
export function mergeProperties(target: Record<string, unknown>, source: Record<string, unknown> | undefined): void {
  if (!source) return;
  for (const [k, v] of Object.entries(source)) {
    const t = target[k];
    if (t && v && typeof t === 'object' && typeof v === 'object') mergeProperties(t as Record<string, unknown>, v as Record<string, unknown>);
    else target[k] = structuredClone(v);
  }
}

const list = <T>(x: T | T[] | undefined): T[] => (x === undefined ? [] : Array.isArray(x) ? x : [x]);

/** Resolves `manifestPath` (a repository manifest) for `platform` (lin, esp32, esp32/esp32s3, ...). */
export function resolveManifest(manifestPath: string, platform: string): ResolvedManifest {
  const ordered: { path: string; m: ManifestSection }[] = [];
  const seen = new Set<string>();
  const parse = (path: string) => {
    if (seen.has(path)) return;
    seen.add(path);
    const m = JSON.parse(readFileSync(path, 'utf8')) as ManifestSection;
    const includes = list(m.include);
    const p = m.platforms ? matchPlatform(m.platforms, platform) : undefined;
    includes.push(...list(p?.include));
    for (const inc of includes) {
      if (inc.startsWith('$(')) continue; // the SDK's own manifests
      const target = resolve(dirname(path), inc);
      if (!existsSync(target)) throw new Error(`${path}: include ${inc} not found`);
      parse(target);
    }
    ordered.push({ path, m });
  };
  parse(resolve(manifestPath));
  const out: ResolvedManifest = { manifests: ordered.map((o) => o.path), config: {}, modules: new Map(), preload: [], errors: [] };
  const merge = (dir: string, s: ManifestSection) => {
    mergeProperties(out.config, s.config);
    for (const [name, src] of Object.entries(s.modules ?? {})) {
      for (const one of list(src)) if (!one.startsWith('$(')) out.modules.set(name, resolve(dir, one));
    }
    out.preload.push(...list(s.preload));
    if (s.error) out.errors.push(s.error);
  };
  for (const { path, m } of ordered) {
    merge(dirname(path), m);
    const p = m.platforms ? matchPlatform(m.platforms, platform) : undefined;
    if (p) merge(dirname(path), p);
  }
  return out;
}

/**
 * The settings the platform's own board fragment (the `include` of its
 * `platforms` entry in the app manifest, with what that includes) sets:
 * whatever else the build merges, these must reach it unchanged.
 */
export function boardFragmentSettings(appManifestPath: string, platform: string, key = 'mqsec'): Record<string, unknown> {
  const app = JSON.parse(readFileSync(appManifestPath, 'utf8')) as ManifestSection;
  const entry = app.platforms ? matchPlatform(app.platforms, platform) : undefined;
  const out: Record<string, unknown> = {};
  for (const inc of list(entry?.include)) {
    if (inc.startsWith('$(')) continue;
    mergeProperties(out, (resolveManifest(resolve(dirname(appManifestPath), inc), platform).config[key] as Record<string, unknown>) ?? {});
  }
  return out;
}

/**
 * One top-level entry of the `mc/config` object in an `mc.config.js`
 * generated by mcconfig (its ConfigFile writes each entry as
 * `\t"key": <JSON.stringify(value)>,`), or undefined when absent.
 */
export function readGeneratedConfig(text: string, key: string): unknown {
  const marker = `"${key}": `;
  const at = text.indexOf(`\n\t${marker}`);
  if (at < 0) return undefined;
  const start = at + 2 + marker.length;
  // The value is JSON: find its end by matching brackets outside strings.
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    if (depth === 0 && !inString && (c === ',' || c === '\n')) return JSON.parse(text.slice(start, i));
  }
  throw new Error(`mc.config.js: value of ${key} does not end`);
}
