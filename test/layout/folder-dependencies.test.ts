/**
 * One-way folder dependencies (README "Layout"): firmware knows nothing of
 * Node or of any other folder; Node-side platform code (platform-node) knows
 * only the firmware interfaces it implements; the broker knows the firmware
 * and platform-node, never the simulator, the CLI, the benchmarks or tools.
 * Checked on the import specifiers of every source file, so a new import that
 * breaks the direction fails here rather than in review.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(rel));
    else if (/\.(ts|mts|js|mjs)$/.test(entry.name) && !entry.name.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

/** Static `from '...'`, side-effect `import '...'` and dynamic `import('...')` specifiers. */
export function importSpecifiers(source: string): string[] {
  const specs: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])([^'"\n]+)\1/g;
  for (const m of source.matchAll(re)) specs.push(m[2]);
  return specs;
}

interface Edge {
  file: string;
  spec: string;
  /** Top-level folder a relative import lands in, or the bare module name. */
  target: string;
}

function edges(folder: string): Edge[] {
  const out: Edge[] = [];
  for (const file of sourceFiles(folder)) {
    for (const spec of importSpecifiers(readFileSync(path.join(ROOT, file), 'utf8'))) {
      const target = spec.startsWith('.') ? path.normalize(path.join(path.dirname(file), spec)).split(path.sep)[0] : spec;
      out.push({ file, spec, target });
    }
  }
  return out;
}

const LOCAL = new Set(['firmware', 'platform-node', 'host-sim', 'broker', 'cli', 'bench', 'tools', 'test', 'boards', 'docs', 'sdk']);
const localEdgesOutside = (folder: string, allowed: string[]) =>
  edges(folder).filter((e) => LOCAL.has(e.target) && e.target !== folder && !allowed.includes(e.target));

describe('folder dependencies', () => {
  it('the scanner sees static, side-effect and dynamic imports', () => {
    const src = `import a from './a.js';\nimport './b.js';\nexport { c } from "../c.js";\nconst d = await import('../../d.js');\nimport type { E } from 'e';`;
    expect(importSpecifiers(src)).toEqual(['./a.js', './b.js', '../c.js', '../../d.js', 'e']);
  });

  it('firmware imports no Node module and no other folder', () => {
    const bad = edges('firmware').filter((e) => e.spec.startsWith('node:') || (LOCAL.has(e.target) && e.target !== 'firmware'));
    expect(bad).toEqual([]);
  });

  it('platform-node implements firmware interfaces and imports nothing else of the project', () => {
    expect(localEdgesOutside('platform-node', ['firmware'])).toEqual([]);
  });

  it('the app SDK (the package export) imports the firmware protocol and platform-node only, nothing of the broker, CLI or simulator', () => {
    expect(localEdgesOutside('sdk', ['firmware', 'platform-node'])).toEqual([]);
    expect(edges('sdk').length).toBeGreaterThan(0);
  });

  it('the broker imports the firmware protocol and platform-node, nothing of the simulator, CLI, bench or tools', () => {
    expect(localEdgesOutside('broker', ['firmware', 'platform-node'])).toEqual([]);
    // the move that created platform-node: the broker's suite comes from there
    expect(edges('broker').some((e) => e.target === 'platform-node')).toBe(true);
  });
});
