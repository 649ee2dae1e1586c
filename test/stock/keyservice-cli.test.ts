/**
 * `mqsec keyservice --flavour mosquitto-dynsec` as an operator runs it
 * (README, "Use your existing broker"): its own process beside a stock
 * Mosquitto with dynamic security, devices provisioned with `mqsec device
 * add` into its data directory while it runs, a fleet waking several times
 * with readings end to end (nothing lost, an app reads them all), revocation
 * with `mqsec device revoke` reaching the broker, `mqsec sim --flavour stock`,
 * a clean stop.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromHex } from '../../firmware/core/bytes.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { utf8Decode, utf8Encode } from '../../firmware/core/utf8.js';
import { parseDeviceConfig } from '../../firmware/app/device-config.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { StockDevice } from '../../host-sim/stock-device.js';
import { startCli, type CliProcess } from '../helpers/cli-process.js';
import { hasMosquittoDynsec, startDynsecMosquitto, type RunningDynsecMosquitto } from '../helpers/mosquitto-dynsec.js';

const suite = createNodeCryptoSuite();
const run = hasMosquittoDynsec() ? describe : describe.skip;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function cli(args: string[]): Promise<string> {
  const p = startCli(args);
  const code = await p.exited;
  if (code !== 0) throw new Error(`mqsec ${args.join(' ')} exited ${code}: ${p.err()}`);
  return p.out();
}

async function until(cond: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(25);
  }
}

run('mqsec keyservice --flavour mosquitto-dynsec (its own process)', () => {
  let broker: RunningDynsecMosquitto;
  let dir: string;
  let ks: CliProcess;
  const keys = new Map<string, Uint8Array>();

  function device(id: string, extra: Partial<ConstructorParameters<typeof StockDevice>[0]> = {}): StockDevice {
    const key = keys.get(id)!;
    const session = new DeviceSecureSession({ suite, devId: id, deviceKey: key, storage: new MemoryStorage() });
    return new StockDevice({ url: broker.url, id, key, suite, session, timeoutMs: 10_000, ...extra });
  }

  /** Connects, retrying while the key service has not yet let the broker know the device (it follows the registry each second). */
  async function connectWhenKnown(d: StockDevice): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await d.connect();
        return;
      } catch (e) {
        if (i >= 20) throw e;
        await sleep(250);
      }
    }
  }

  beforeAll(async () => {
    broker = await startDynsecMosquitto();
    dir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-stock-cli-'));
    const data = path.join(dir, 'data');
    await cli(['role', 'add', 'stocksensor', '--data', data]);
    await cli(['acl', 'add', 'stocksensor', 'allow', 'publish', 'sensors/%u/#', '--mode', 'e2e', '--data', data]);
    await cli(['role', 'add', 'reader', '--data', data]);
    await cli(['acl', 'add', 'reader', 'allow', 'subscribe', 'sensors/#', '--data', data]);
    // most of the fleet straight into the registry (the same provisioning path), before the key service starts
    const r = SqliteRegistry.open(data);
    for (let i = 0; i < 10; i++) keys.set(`f${i}`, (await r.addDevice(`f${i}`, 'stocksensor')).key);
    keys.set('app1', (await r.addDevice('app1', 'reader')).key);
    await r.close();
    await writeFile(path.join(dir, 'admin-password'), broker.adminPassword + '\n', { mode: 0o600 });
    ks = startCli(['keyservice', '--flavour', 'mosquitto-dynsec', '--broker', broker.url, '--data', data, '--username', broker.adminUser, '--password-file', path.join(dir, 'admin-password')]);
    await until(() => ks.out().includes('linked to'), 20_000).catch((e) => {
      throw new Error(`${(e as Error).message}\n${ks.out()}\n${ks.err()}`);
    });
  }, 60_000);

  afterAll(async () => {
    if (ks && ks.child.exitCode === null) ks.child.kill('SIGTERM');
    await ks?.exited;
    await broker?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a fleet wakes three times through the broker, nothing lost; a device added with `mqsec device add` joins while it runs', async () => {
    const data = path.join(dir, 'data');
    const config = path.join(dir, 'late.json');
    await cli(['device', 'add', 'late1', '--role', 'stocksensor', '--data', data, '--json', '--config', config]);
    keys.set('late1', fromHex(parseDeviceConfig(JSON.parse(await readFile(config, 'utf8'))).key));
    const got = new Set<string>();
    let dupes = 0;
    const app = device('app1', {
      onMessage: (m) => {
        const k = `${m.publisher}|${m.topic}|${utf8Decode(m.plaintext)}`;
        if (got.has(k)) dupes++;
        got.add(k);
      },
    });
    await app.connect();
    expect(await app.subscribe('sensors/#')).toBe(1);
    const ids = [...keys.keys()].filter((id) => id !== 'app1');
    const fleet = ids.map((id) => ({ id, dev: device(id) }));
    const sent: string[] = [];
    for (let wake = 0; wake < 3; wake++) {
      await Promise.all(
        fleet.map(async ({ id, dev }) => {
          if (id === 'late1' && wake === 0) await connectWhenKnown(dev);
          else {
            // a wake comes after the broker log showed the last connection end (§15.3); retry once if not
            try {
              await dev.connect();
            } catch {
              await sleep(300);
              await dev.connect();
            }
          }
          for (let n = 0; n < 2; n++) {
            const text = `w${wake}n${n}`;
            await dev.publish(`sensors/${id}/t`, utf8Encode(text), 1);
            sent.push(`${id}|sensors/${id}/t|${text}`);
          }
          await dev.end();
        }),
      );
      await sleep(300);
    }
    await until(() => got.size >= sent.length);
    await sleep(300);
    expect([...got].sort()).toEqual(sent.sort());
    expect(dupes).toBe(0);
    await app.end();
  }, 120_000);

  it('`mqsec device revoke` reaches the broker: the live connection ends and the device cannot come back', async () => {
    const d = device('f0');
    await d.connect();
    const raw = d.raw!;
    const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    await cli(['device', 'revoke', 'f0', '--data', path.join(dir, 'data')]);
    await Promise.race([closed, sleep(10_000).then(() => Promise.reject(new Error('not disconnected')))]);
    await expect(device('f0').connect()).rejects.toThrow();
  }, 60_000);

  it('`mqsec sim --flavour stock` runs the worker fleet through the broker and the key service: nothing lost', async () => {
    const out = await cli(['sim', '--flavour', 'stock', '--broker', broker.url, '--data', path.join(dir, 'data'), '--devices', '6', '--duration', '6', '--rate', '3', '--json']);
    const r = JSON.parse(out.trim().split('\n').pop()!) as { devices: number; phase1_ok: number; phase2_ok: number; sent: number; verified: number; duplicates: number; lost: number; detail: { flavour: string } };
    expect(r.detail.flavour).toBe('stock');
    expect(r.devices).toBe(6);
    expect(r.phase1_ok + r.phase2_ok).toBeGreaterThanOrEqual(12); // every node woke more than once: phase 2 after phase 1
    expect(r.phase2_ok).toBeGreaterThanOrEqual(6);
    expect(r.sent).toBeGreaterThanOrEqual(24);
    expect(r.verified).toBe(r.sent);
    expect(r.lost).toBe(0);
    expect(r.duplicates).toBe(0);
  }, 90_000);

  it('a restarted key service process keeps the installed tokens (stock-mosquitto.db in --data): devices come back with phase 2 (§15.3)', async () => {
    // Checked: with the process keeping that state in memory only, f5 comes back through phase 1 and this fails.
    const data = path.join(dir, 'data');
    const d = device('f5');
    await d.connect();
    await d.end();
    // the next token is installed once the broker log showed the end (§15.3); then the key service stops
    await sleep(500);
    ks.child.kill('SIGTERM');
    expect(await ks.exited).toBe(0);
    ks = startCli(['keyservice', '--flavour', 'mosquitto-dynsec', '--broker', broker.url, '--data', data, '--username', broker.adminUser, '--password-file', path.join(dir, 'admin-password')]);
    await until(() => ks.out().includes('linked to'), 20_000).catch((e) => {
      throw new Error(`${(e as Error).message}\n${ks.out()}\n${ks.err()}`);
    });
    expect((await d.connect()).phase1).toBe(false);
    await d.end();
  }, 60_000);

  it('stops cleanly on SIGTERM', async () => {
    ks.child.kill('SIGTERM');
    expect(await ks.exited).toBe(0);
    expect(ks.out()).toContain('mqsec key service stopped');
  }, 30_000);
});
