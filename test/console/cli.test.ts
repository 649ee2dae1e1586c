/**
 * The console from the command line, as separate processes: `mqsec broker
 * --console-port` and `mqsec demo` (what `npm start` runs) print the console's
 * URL and a one-time admin login, and that login works.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir, waitFor } from '../broker/helpers.js';
import { login } from './helpers.js';

const bin = join(process.cwd(), 'cli', 'bin.mjs');

function startCli(args: string[]) {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', () => {});
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out: () => out, exited };
}

describe('console from the CLI', () => {
  const dir = tempDir('mqsec-console-cli-');
  afterAll(() => dir.remove());

  it('broker --console-port prints the URL and a one-time admin login that works; a restart prints no password', async () => {
    const b = startCli(['broker', '--data', dir.path, '--port', '0', '--console-port', '0', '--log-level', 'warn']);
    try {
      await waitFor(() => /admin login \(shown once\): \S+ \/ \S+/.test(b.out()), 40_000, 'console announced');
      const url = /operator console on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(b.out())![1]!;
      const [, name, password] = /admin login \(shown once\): (\S+) \/ (\S+)/.exec(b.out())!;
      const s = await login(url, name!, password!);
      expect((await s.get('api/session')).json.name).toBe('admin');
    } finally {
      b.child.kill('SIGTERM');
      expect(await b.exited).toBe(0);
    }
    const again = startCli(['broker', '--data', dir.path, '--port', '0', '--console-port', '0', '--log-level', 'warn']);
    try {
      await waitFor(() => /operator console on/.test(again.out()), 40_000, 'console announced');
      await new Promise((r) => setTimeout(r, 200));
      expect(again.out()).not.toContain('admin login');
    } finally {
      again.child.kill('SIGTERM');
      await again.exited;
    }
  }, 90_000);

  it('demo (npm start) prints the console URL and a working admin login', async () => {
    const d = startCli(['demo', '--devices', '2', '--port', '0', '--console-port', '0']);
    try {
      await waitFor(() => /log in as \S+ with password \S+/.test(d.out()), 40_000, 'demo console announced');
      const url = /operator console: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(d.out())![1]!;
      const [, name, password] = /log in as (\S+) with password (\S+)/.exec(d.out())!;
      const s = await login(url, name!, password!);
      const devices = (await s.get('api/devices')).json.devices as { id: string }[];
      expect(devices.map((x) => x.id)).toEqual(['node-0001', 'node-0002']);
    } finally {
      d.child.kill('SIGINT');
      await d.exited;
    }
  }, 90_000);
});
