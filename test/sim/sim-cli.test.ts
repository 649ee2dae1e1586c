/**
 * `mqsec sim` / `mqsec demo` as an operator meets them: numeric flags are
 * validated with one-line errors, the temporary data directory (it holds an
 * embedded broker's master key) is gone on every way out, a node revoked
 * during the run is named in the summary and does not stretch the run, and a
 * run against an operator's registry leaves no simulated device or account.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../cli/main.js';
import type { CliIo } from '../../cli/command.js';
import { runSimCommand, type SimCliOptions } from '../../cli/commands/sim.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { occupyPort, startCli } from '../helpers/cli-process.js';
import { tempDir, testBroker, waitFor } from '../broker/helpers.js';

function captureIo(): CliIo & { lines: string[]; errs: string[] } {
  const lines: string[] = [];
  const errs: string[] = [];
  return { lines, errs, out: (l) => lines.push(l), err: (l) => errs.push(l), readStdin: async () => '' };
}

const dirs: { remove(): void }[] = [];
/** A fresh TMPDIR: whatever the command leaves in it is visible. */
function freshTmp(): string {
  const d = tempDir('mqsec-tmp-');
  dirs.push(d);
  return d.path;
}
/** Entries a run of mqsec left (the tsx loader's own cache excluded). */
const leftovers = (dir: string) => readdirSync(dir).filter((n) => !n.startsWith('tsx-'));

afterAll(() => {
  process.exitCode = 0;
  dirs.forEach((d) => d.remove());
});

const baseSim: SimCliOptions = { devices: 3, duration: 4, drop: 0, latency: 0, clockSkew: 0, powerCut: 0, attackers: 0, sleepMode: 'deep', logLevel: 'silent', json: true };

describe('numeric flags', () => {
  it.each([
    [['demo', '--devices', '0'], /--devices must be a whole number from 1 to 100000, got "0"/],
    [['demo', '--devices', 'abc'], /--devices must be a whole number/],
    [['demo', '--port', '1.5'], /--port must be a whole number from 0 to 65535/],
    [['sim', '--devices', '2.5'], /--devices must be a whole number/],
    [['sim', '--devices', ''], /--devices must be a whole number/],
    [['sim', '--duration', '0.5'], /--duration must be a number from 1/],
    [['sim', '--drop', '1.5'], /--drop must be a number from 0 to 1/],
    [['sim', '--power-cut', 'NaN'], /--power-cut must be a number/],
    [['sim', '--attackers', '1e2'], /--attackers must be a whole number/],
    [['sim', '--workers', '-1'], /--workers must be a whole number/],
    [['sim', '--latency', '0x10'], /--latency must be a whole number/],
    [['audit', '--limit', '0'], /--limit must be a whole number from 1/],
    [['hil', '--timeout', '5.5'], /--timeout must be a whole number/],
  ])('%j is refused with one line', async (args, msg) => {
    const io = captureIo();
    const tmp = freshTmp();
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = tmp;
    try {
      expect(await main(['node', 'mqsec', ...(args as string[])], io)).toBe(1);
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
    expect(io.errs).toHaveLength(1);
    expect(io.errs[0]).toMatch(msg);
    expect(leftovers(tmp)).toEqual([]);
  });
});

describe('temporary data directory', () => {
  it('a sim that fails to start its broker exits 1 with one line and leaves nothing behind', async () => {
    const tmp = freshTmp();
    const taken = await occupyPort();
    try {
      const p = startCli(['sim', '--devices', '2', '--duration', '2', '--port', String(taken.port)], { env: { ...process.env, TMPDIR: tmp } });
      expect(await p.exited).toBe(1);
      expect(p.err().trim().split('\n')).toEqual([`mqsec: cannot listen for MQTT on 127.0.0.1:${taken.port}: address already in use (another process holds this port)`]);
      expect(leftovers(tmp)).toEqual([]);
    } finally {
      await taken.close();
    }
  }, 120_000);

  it('demo: a second Ctrl-C quits at once (exit 130) and still removes the data directory', async () => {
    const tmp = freshTmp();
    const p = startCli(['demo', '--devices', '2', '--port', '0'], { env: { ...process.env, TMPDIR: tmp } });
    await waitFor(() => /mqsec demo: broker on/.test(p.out()), 90_000, 'demo started');
    const dataDir = /data in (\S+)\)/.exec(p.out())![1];
    expect(dataDir.startsWith(tmp)).toBe(true);
    expect(leftovers(tmp)).toHaveLength(1); // the run's directory, with the broker's master key
    p.child.kill('SIGINT');
    await waitFor(() => /stopping/.test(p.err()), 30_000, 'first Ctrl-C seen');
    p.child.kill('SIGINT');
    expect(await p.exited).toBe(130);
    expect(leftovers(tmp)).toEqual([]);
  }, 180_000);
});

describe('a node revoked during the run', () => {
  it('is named in the summary, its readings are not "lost", and the run does not wait for it', async () => {
    const io = captureIo();
    let dataDir = '';
    const r = await runSimCommand({ ...baseSim, json: false }, io, {
      quiesceS: 60, // a run waiting for the revoked node would take a minute more
      onStarted: (info) => {
        dataDir = info.dataDir;
        setTimeout(async () => {
          const reg = SqliteRegistry.open(dataDir);
          await reg.revokeDevice('node-0002');
          await reg.close();
        }, 1500);
      },
    });
    expect(r.revoked).toEqual(['node-0002']);
    expect(r.lost).toBe(0);
    expect(r.connected_at_end).toBe(2);
    expect(r.verified).toBe(r.sent - r.held_by_revoked);
    expect(r.duration_s).toBeLessThan(30);
    const summary = io.lines.join('\n');
    expect(summary).toMatch(/revoked during the run\s+1 revoked \(node-0002\)/);
    expect(summary).toMatch(/^\s+lost\s+0$/m);
  }, 90_000);
});

describe('sim against an operator\'s broker', () => {
  it('removes the simulated devices and its verifier account at the end', async () => {
    const d = tempDir();
    dirs.push(d);
    const broker = await testBroker(d.path);
    await broker.registry.addDevice('real-sensor', 'sensor');
    try {
      let during: { devices: string[]; accounts: string[] } | undefined;
      const io = captureIo();
      const r = await runSimCommand({ ...baseSim, devices: 2, duration: 2, broker: `mqtt://127.0.0.1:${broker.port}`, data: d.path }, io, {
        onStarted: async () => {
          const reg = SqliteRegistry.open(d.path);
          during = { devices: (await reg.listDevices()).map((x) => x.id), accounts: (await reg.listAccounts()).map((a) => a.name) };
          await reg.close();
        },
      });
      expect(r.verified).toBe(r.sent);
      expect(during!.devices).toHaveLength(3);
      expect(during!.accounts.filter((a) => a.startsWith('verifier-'))).toHaveLength(1);
      const after = SqliteRegistry.open(d.path);
      expect((await after.listDevices()).map((x) => x.id)).toEqual(['real-sensor']);
      expect(await after.listAccounts()).toEqual([]);
      expect(await after.listAudit({ kind: 'device.remove' })).toHaveLength(2);
      await after.close();
    } finally {
      await broker.stop();
    }
  }, 60_000);
});

describe('sim --e2e against an operator\'s broker', () => {
  it('its rules decide the modes; the run verifies as an app principal on the SDK and removes it at the end', async () => {
    const d = tempDir();
    dirs.push(d);
    const broker = await testBroker(d.path, { revisionPollMs: 50 });
    await broker.registry.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
    await broker.syncRegistry();
    try {
      let during: string[] = [];
      const io = captureIo();
      const r = await runSimCommand({ ...baseSim, devices: 2, duration: 3, e2e: true, broker: `mqtt://127.0.0.1:${broker.port}`, data: d.path, json: false }, io, {
        onStarted: async () => {
          const reg = SqliteRegistry.open(d.path);
          during = (await reg.listDevices()).map((x) => x.id);
          await reg.close();
        },
      });
      expect(r.mode).toBe('e2e');
      expect(r.sent).toBeGreaterThan(0);
      expect(r.verified).toBe(r.sent); // opened by the SDK backend: the broker could not have handed it plaintext
      expect(r.lost).toBe(0);
      expect(r.duplicates).toBe(0);
      expect(during.filter((id) => /^verifier-[0-9a-f]+-e2e$/.test(id))).toHaveLength(1);
      // the operator's policy as it stands: readings e2e, commands hop by hop
      expect(r.topic_modes).toEqual([
        { action: 'publish', filter: 'sensors/<node>/#', mode: 'e2e' }, // the key service's groups are not known from outside
        { action: 'subscribe', filter: 'cmd/<node>/#', mode: 'hop' },
      ]);
      const summary = io.lines.join('\n');
      expect(summary).toMatch(/protection mode of the device topics \(run with --e2e\):\n\s+publish\s+sensors\/<node>\/#\s+e2e /);
      expect(summary).toMatch(/subscribe cmd\/<node>\/#\s+hop /);
      const after = SqliteRegistry.open(d.path);
      expect(await after.listDevices()).toEqual([]);
      await after.close();
    } finally {
      await broker.stop();
    }
  }, 60_000);
});
