/**
 * A broker that cannot start must not linger: each start-up failure closes
 * whatever it had opened, releases the data-directory lock and exits non-zero
 * with one line that says what to fix (a supervisor's Restart= then works).
 * Ctrl-C, also during start-up and repeated, leaves no lock behind.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { LOCK_FILE } from '../../broker/registry/lock.js';
import { freePort } from '../helpers/brokers.js';
import { occupyPort, portIsFree, startCli } from '../helpers/cli-process.js';
import { tempDir, waitFor } from './helpers.js';

const dirs: { remove(): void }[] = [];
function dataDir(): string {
  const d = tempDir('mqsec-start-');
  dirs.push(d);
  return d.path;
}
afterAll(() => dirs.forEach((d) => d.remove()));

/** Runs `mqsec broker` expecting it to fail on its own; returns exit code and stderr lines. */
async function failedStart(args: string[]) {
  const b = startCli(['broker', ...args]);
  const code = await Promise.race([b.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 90_000))]);
  if (code === 'hung') b.child.kill('SIGKILL');
  return { code, errLines: b.err().trim().split('\n'), out: b.out() };
}

describe('mqsec broker start-up failures', () => {
  it('MQTT port taken: exits 1 with one line, lock released, metrics port never left open', async () => {
    const data = dataDir();
    const taken = await occupyPort();
    const metricsPort = await freePort();
    try {
      const r = await failedStart(['--data', data, '--port', String(taken.port), '--metrics-port', String(metricsPort)]);
      expect(r.code).toBe(1);
      expect(r.errLines).toEqual([`mqsec: cannot listen for MQTT on 127.0.0.1:${taken.port}: address already in use (another process holds this port)`]);
      expect(r.out).not.toMatch(/listening/);
      expect(existsSync(join(data, LOCK_FILE))).toBe(false);
      expect(await portIsFree(metricsPort)).toBe(true);
    } finally {
      await taken.close();
    }
  }, 120_000);

  it('metrics port taken: exits 1 with one line, the MQTT listener it had opened is closed, lock released', async () => {
    const data = dataDir();
    const taken = await occupyPort();
    const mqttPort = await freePort();
    try {
      const r = await failedStart(['--data', data, '--port', String(mqttPort), '--metrics-port', String(taken.port)]);
      expect(r.code).toBe(1);
      expect(r.errLines).toEqual([`mqsec: cannot listen for metrics on 127.0.0.1:${taken.port}: address already in use (another process holds this port)`]);
      expect(existsSync(join(data, LOCK_FILE))).toBe(false);
      expect(await portIsFree(mqttPort)).toBe(true);
    } finally {
      await taken.close();
    }
  }, 120_000);

  it('--host with an address this machine does not have: exits 1 with one line, lock released', async () => {
    const data = dataDir();
    const metricsPort = await freePort();
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never assigned to a real interface
    const r = await failedStart(['--data', data, '--port', '0', '--host', '192.0.2.55', '--metrics-port', String(metricsPort)]);
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual(['mqsec: cannot listen for MQTT on 192.0.2.55:0: address not available (no interface of this machine has it)']);
    expect(existsSync(join(data, LOCK_FILE))).toBe(false);
    expect(await portIsFree(metricsPort)).toBe(true);
  }, 120_000);

  it('Ctrl-C during start-up: stops once open, exit 0, lock released, ports closed', async () => {
    const data = dataDir();
    const [mqttPort, metricsPort] = [await freePort(), await freePort()];
    const b = startCli(['broker', '--data', data, '--port', String(mqttPort), '--metrics-port', String(metricsPort)]);
    // the lock exists from the first moment of the start, before the listeners open
    await waitFor(() => existsSync(join(data, LOCK_FILE)), 60_000, 'lock taken');
    b.child.kill('SIGINT');
    expect(await b.exited).toBe(0);
    expect(b.out()).toMatch(/mqsec broker stopped/);
    expect(existsSync(join(data, LOCK_FILE))).toBe(false);
    expect(await portIsFree(mqttPort)).toBe(true);
    expect(await portIsFree(metricsPort)).toBe(true);
  }, 120_000);

  it('Ctrl-C pressed twice on a running broker: one clean stop, exit 0, lock released, ports closed', async () => {
    const data = dataDir();
    const [mqttPort, metricsPort] = [await freePort(), await freePort()];
    const b = startCli(['broker', '--data', data, '--port', String(mqttPort), '--metrics-port', String(metricsPort)]);
    await waitFor(() => /metrics on/.test(b.out()), 60_000, 'broker listening');
    b.child.kill('SIGINT');
    await waitFor(() => /shutting down/.test(b.err()), 30_000, 'stop begun');
    b.child.kill('SIGINT'); // the impatient second Ctrl-C, while it drains or winds down
    expect(await b.exited).toBe(0);
    expect(b.out()).toMatch(/mqsec broker stopped/);
    expect(existsSync(join(data, LOCK_FILE))).toBe(false);
    expect(await portIsFree(mqttPort)).toBe(true);
    expect(await portIsFree(metricsPort)).toBe(true);
  }, 120_000);
});
