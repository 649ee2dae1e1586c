/**
 * Declarations of the package's Node API (sdk/index.ts and what it reaches)
 * into types/, for TypeScript programs that `import ... from 'mqsec'`
 * (package.json "exports" -> "types"). Run by `npm pack` (prepack); the
 * directory is not committed.
 *
 * Each file is written to a temporary name and renamed over its target, so
 * two packs running at once (the test suite packs in parallel files) never
 * let a reader see half a declaration file.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

const ROOT = resolve(import.meta.dirname, '..');
const OUT = join(ROOT, 'types');

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]));
}

const tmp = mkdtempSync(join(tmpdir(), 'mqsec-types-'));
try {
  const program = ts.createProgram([join(ROOT, 'sdk', 'index.ts')], {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ['lib.es2022.d.ts'],
    types: ['node'],
    strict: true,
    skipLibCheck: true,
    esModuleInterop: true,
    declaration: true,
    emitDeclarationOnly: true,
    rootDir: ROOT,
    outDir: tmp,
  });
  const diagnostics = [...ts.getPreEmitDiagnostics(program), ...program.emit().diagnostics];
  if (diagnostics.length) {
    process.stderr.write(ts.formatDiagnostics(diagnostics, { getCanonicalFileName: (f) => f, getCurrentDirectory: () => ROOT, getNewLine: () => '\n' }));
    process.exit(1);
  }
  let n = 0;
  for (const f of files(tmp)) {
    const target = join(OUT, relative(tmp, f));
    mkdirSync(dirname(target), { recursive: true });
    const part = `${target}.${process.pid}.tmp`;
    writeFileSync(part, readFileSync(f));
    renameSync(part, target);
    n++;
  }
  process.stderr.write(`types/: ${n} declaration files\n`); // stdout is npm pack --json's
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
