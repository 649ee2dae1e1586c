/**
 * The operator's install path and deployment files:
 * - `npm pack` + `npm install -g --prefix <tmp> <tarball>`, then the installed
 *   `mqsec` runs from outside the repository: `--help`, and a broker that
 *   starts, serves metrics (what the container health check asks) and stops.
 * - deploy/mqsec.service passes `systemd-analyze verify` (no warnings) with
 *   ExecStart pointing at the installed command.
 * - deploy/Dockerfile (no Docker engine here): parsed, Debian base, non-root
 *   user, data volume, and a health check that is run for real against the
 *   installed broker; its CMD flags are the CLI's own.
 *
 * The install is honest about the network: dependencies come from npm's cache
 * when it has them (`--prefer-offline`; CI's `npm ci` fills it) and from the npm
 * registry otherwise. Install scripts are skipped: the one native dependency,
 * better-sqlite3, gets the addon this checkout built for the same Node and
 * version (or is rebuilt with node-gyp when the versions differ), because its
 * own install script would try to download a prebuilt binary first.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildProgram } from '../../cli/main.js';
import { freePort } from '../helpers/brokers.js';
import { startCli } from '../helpers/cli-process.js';
import { tempDir, waitFor } from '../broker/helpers.js';
import { healthcheckCommand, parseDockerfile, stages } from './dockerfile.js';

const run = promisify(execFile);
const ROOT = process.cwd();
const work = tempDir('mqsec-install-');
const prefix = join(work.path, 'prefix');
const installedBin = join(prefix, 'bin', 'mqsec');
const installedPkg = join(prefix, 'lib', 'node_modules', 'mqsec');
let tarball = '';
let tarFiles: string[] = [];

afterAll(() => work.remove());

beforeAll(async () => {
  const packed = await run('npm', ['pack', '--json', '--pack-destination', work.path], { cwd: ROOT, maxBuffer: 16 << 20 });
  const info = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
  tarball = join(work.path, info[0].filename);
  tarFiles = info[0].files.map((f) => f.path);
  await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', tarball], {
    cwd: work.path,
    maxBuffer: 16 << 20,
  });
  const version = (dir: string) => (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  const ours = join(ROOT, 'node_modules', 'better-sqlite3');
  const theirs = join(installedPkg, 'node_modules', 'better-sqlite3');
  if (version(ours) === version(theirs)) {
    mkdirSync(join(theirs, 'build', 'Release'), { recursive: true });
    copyFileSync(join(ours, 'build', 'Release', 'better_sqlite3.node'), join(theirs, 'build', 'Release', 'better_sqlite3.node'));
  } else {
    await run('npm', ['rebuild', 'better-sqlite3', '--build-from-source'], { cwd: installedPkg, maxBuffer: 16 << 20 });
  }
}, 600_000);

describe('install from a packed tarball', () => {
  it('the tarball carries the runtime and the deployment files, not the tests or local state', () => {
    for (const f of ['cli/bin.mjs', 'cli/main.ts', 'broker/server.ts', 'platform-node', 'deploy/mqsec.service', 'deploy/Dockerfile', 'README.md', 'package.json']) {
      expect(tarFiles.some((p) => p === f || p.startsWith(f + '/'))).toBe(true);
    }
    expect(tarFiles.filter((p) => /^(test|node_modules|\.mqsec|data|build)\//.test(p) || /master\.key$|device-config[^/]*\.json$/.test(p))).toEqual([]);
  });

  it('`mqsec --help` works from outside the repository', () => {
    const r = spawnSync(installedBin, ['--help'], { cwd: work.path, encoding: 'utf8', timeout: 110_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/Usage: mqsec/);
    for (const c of ['broker', 'device', 'user', 'sim', 'demo']) expect(r.stdout).toMatch(new RegExp(`^\\s+${c}\\b`, 'm'));
  }, 120_000);

  it('the installed broker starts, answers the container health check, and stops on SIGTERM', async () => {
    const [port, metricsPort] = [await freePort(), await freePort()];
    const b = startCli(['broker', '--data', join(work.path, 'data'), '--port', String(port), '--metrics-port', String(metricsPort)], { bin: installedBin, cwd: work.path });
    try {
      await waitFor(() => /metrics on/.test(b.out()), 90_000, 'installed broker listening');
      expect(b.out()).toContain(`mqsec broker listening on mqtt://127.0.0.1:${port}`);
      expect(health(metricsPort)).toBe(0);
    } finally {
      b.child.kill('SIGTERM');
    }
    expect(await b.exited).toBe(0);
    expect(health(metricsPort)).toBe(1); // and it reports a stopped broker as unhealthy
  }, 150_000);
});

const dockerfile = parseDockerfile(readFileSync(join(ROOT, 'deploy', 'Dockerfile'), 'utf8'));
const finalStage = stages(dockerfile).at(-1)!;
const one = (k: string) => finalStage.filter((i) => i.keyword === k).at(-1);

/** Runs the Dockerfile's HEALTHCHECK command on this machine, against metricsPort instead of the image's port. */
function health(metricsPort: number): number | null {
  const { command } = healthcheckCommand(one('HEALTHCHECK')!);
  const args = command.slice(1).map((a) => a.replace(/127\.0\.0\.1:\d+/, `127.0.0.1:${metricsPort}`));
  return spawnSync(command[0] === 'node' ? process.execPath : command[0], args, { timeout: 20_000 }).status;
}

describe('deploy/mqsec.service', () => {
  it('passes systemd-analyze verify without a warning (ExecStart = the installed mqsec)', () => {
    const unit = readFileSync(join(ROOT, 'deploy', 'mqsec.service'), 'utf8');
    expect(unit).toMatch(/^ExecStart=\/usr\/local\/bin\/mqsec broker /m);
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(unit).toMatch(/^StateDirectory=mqsec$/m);
    const dir = join(work.path, 'unit');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'mqsec.service'), unit.replace('/usr/local/bin/mqsec', installedBin));
    const r = spawnSync('systemd-analyze', ['verify', join(dir, 'mqsec.service')], { encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    expect(r.stderr.trim()).toBe('');
    expect(r.status).toBe(0);
    // the flags it passes are the CLI's own
    checkBrokerFlags(/^ExecStart=\S+ broker (.*)$/m.exec(unit)![1].split(/\s+/));
  });
});

function checkBrokerFlags(args: string[]): Record<string, string> {
  const broker = buildProgram().commands.find((c) => c.name() === 'broker')!;
  const known = new Set(broker.options.map((o) => o.long));
  const flags: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) {
    expect(known.has(args[i]), `unknown broker flag ${args[i]}`).toBe(true);
    flags[args[i]] = args[i + 1];
  }
  return flags;
}

describe('deploy/Dockerfile', () => {
  it('Debian base, non-root user, data volume, exposed ports and health check on the metrics port; CMD uses real flags', () => {
    for (const s of stages(dockerfile)) expect(s[0].args).toMatch(/^node:\d+-(bookworm|trixie|bullseye)(-slim)?(\s+AS\s+\w+)?$/i);
    const user = one('USER')!;
    expect(user.args).not.toMatch(/^(root|0)(:|$)/);
    const cmd = one('CMD')!.json!;
    expect(one('ENTRYPOINT')!.json).toEqual(['mqsec']);
    expect(cmd[0]).toBe('broker');
    const flags = checkBrokerFlags(cmd.slice(1));
    // USER comes before the command, so the broker never runs as root
    expect(finalStage.indexOf(user)).toBeLessThan(finalStage.indexOf(one('CMD')!));
    expect(one('VOLUME')!.json).toEqual([flags['--data']]);
    expect(one('EXPOSE')!.args.split(/\s+/).sort()).toEqual([flags['--port'], flags['--metrics-port']].sort());
    expect(flags['--host']).toBe('0.0.0.0');
    const hc = healthcheckCommand(one('HEALTHCHECK')!);
    expect(hc.command.join(' ')).toContain(`127.0.0.1:${flags['--metrics-port']}/metrics`);
    expect(Object.keys(hc.options).sort()).toEqual(['interval', 'retries', 'start-period', 'timeout']);
  });

  it('copies every runtime folder the package ships, and only paths that exist and are not docker-ignored', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
    const copied: string[] = [];
    for (const ins of dockerfile.filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from'))) {
      const parts = ins.args.split(/\s+/);
      for (const src of parts.slice(0, -1)) {
        expect(existsSync(join(ROOT, src)), `COPY source ${src}`).toBe(true);
        expect(ignored).not.toContain(src);
        copied.push(src.replace(/\/$/, ''));
      }
    }
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { files: string[] };
    // types/ holds declarations for TypeScript programs importing the SDK, generated at pack time: not run
    const runtime = pkg.files.map((f) => f.replace(/\/$/, '')).filter((f) => !['docs', 'deploy', 'README.md', 'types'].includes(f));
    for (const f of runtime) expect(copied, `Dockerfile copies ${f}`).toContain(f);
    // and the package really needs no more than that: the installed CLI above ran from these files alone
    expect(readdirSync(installedPkg).filter((f) => f !== 'node_modules' && f !== 'package.json').sort()).toEqual([...runtime, 'docs', 'deploy', 'README.md', 'types'].sort());
  });
});
