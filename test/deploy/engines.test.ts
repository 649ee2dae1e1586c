/**
 * `npm install` on Node 20 (which the project supports: package.json
 * `engines`) warns `EBADENGINE ... required: { node: '>=22' }` for exactly one
 * package, `amaro` (Node's TypeScript type-stripper). It is harmless, and this
 * test keeps that claim true (README "Two commands"):
 * - it is a dev-only dependency (of @agoric/xsnap, the XS engine the tests
 *   use, through @endo/bundle-source), so `npm install --omit=dev`, the Docker
 *   image and `npm install -g` of the packed tarball do not install it;
 * - nothing the project runs loads it: @endo/bundle-source imports it only to
 *   bundle TypeScript for xsnap's own test runner, which the project does not
 *   use (test/xs/harness.ts bundles with esbuild);
 * - every other package in the lockfile accepts the running Node.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import semver from 'semver';
import { spawnSync } from 'node:child_process';

const ROOT = process.cwd();
const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, { version?: string; engines?: { node?: string } | string[]; dev?: boolean; dependencies?: Record<string, string> }>;
};

/** Lockfile packages whose declared Node range excludes this Node. */
function refusingThisNode(): { path: string; range: string; dev: boolean }[] {
  const out: { path: string; range: string; dev: boolean }[] = [];
  for (const [path, p] of Object.entries(lock.packages)) {
    const range = p.engines && !Array.isArray(p.engines) ? p.engines.node : undefined;
    if (path === '' || !range) continue;
    if (!semver.satisfies(process.versions.node, range)) out.push({ path, range, dev: Boolean(p.dev) });
  }
  return out;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (/\.(ts|mts|mjs|js|cjs)$/.test(name)) out.push(p);
  }
  return out;
}

describe('Node engine ranges of the dependencies', () => {
  it.runIf(semver.major(process.versions.node) < 22)('on Node < 22 only amaro refuses this Node, and it is a dev-only dependency', () => {
    expect(refusingThisNode()).toEqual([{ path: 'node_modules/amaro', range: '>=22', dev: true }]);
  });

  it('amaro is reached only through @endo/bundle-source, which the project never imports', () => {
    const dependents = Object.entries(lock.packages)
      .filter(([, p]) => p.dependencies && 'amaro' in p.dependencies)
      .map(([path]) => path);
    expect(dependents).toEqual(['node_modules/@endo/bundle-source']);
    expect(lock.packages['node_modules/@endo/bundle-source'].dev).toBe(true);
    const importers = ['cli', 'broker', 'firmware', 'platform-node', 'host-sim', 'tools', 'bench', 'test']
      .flatMap((d) => sourceFiles(join(ROOT, d)))
      .filter((f) => /['"](amaro|@endo\/bundle-source)['"/]/.test(readFileSync(f, 'utf8')) && !f.endsWith('engines.test.ts'));
    expect(importers).toEqual([]);
  });

  it('the project itself declares the Node it is tested on', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } };
    expect(semver.satisfies(process.versions.node, pkg.engines.node)).toBe(true);
  });
});

describe('local state stays out of git', () => {
  it.each(['data/registry.db', 'data/master.key', '.mqsec/registry.db', 'device-config-node-01.json'])('%s is git-ignored', (path) => {
    const r = spawnSync('git', ['check-ignore', '-q', path], { cwd: ROOT });
    expect(r.status).toBe(0);
  });
});
