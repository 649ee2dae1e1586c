/**
 * The mqsec broker for the benchmarks: a throw-away data directory with a
 * registry provisioned up front (devices with fresh keys, one role for the
 * benchmark), then the broker in its own process (bench/servers/child.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Registry } from '../../broker/registry/registry.js';
import { startChildBroker, type ChildBroker } from './spawn.js';
import { removeOnExit } from '../net.js';

export interface ProvisionedDevice {
  id: string;
  key: Uint8Array;
}

export interface MqsecBrokerSetup {
  dataDir: string;
  devices: ProvisionedDevice[];
  /** Plaintext application account (role allowed plaintext, subscribes sensors/#). */
  app: { name: string; password: string };
  start(): Promise<ChildBroker>;
  cleanup(): void;
}

/** Role of the benchmark devices: publish on their own sensors/<id>/#, subscribe to any sensors/#. */
export const BENCH_ROLE = 'benchdev';

export async function provisionMqsecBroker(deviceIds: string[]): Promise<MqsecBrokerSetup> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqsec-bench-broker-'));
  const cleanup = removeOnExit(dataDir, (d) => fs.rmSync(d, { recursive: true, force: true }));
  const registry = Registry.open(dataDir);
  const devices: ProvisionedDevice[] = [];
  const app = { name: 'benchapp', password: 'bench-app-password' };
  try {
    registry.addRole(BENCH_ROLE);
    registry.addRule(BENCH_ROLE, 'publish', 'sensors/%u/#');
    registry.addRule(BENCH_ROLE, 'subscribe', 'sensors/#');
    for (const id of deviceIds) {
      const { key } = registry.addDevice(id, BENCH_ROLE);
      devices.push({ id, key });
    }
    await registry.addAccount(app.name, 'app', app.password);
  } catch (e) {
    registry.close();
    cleanup();
    throw e;
  }
  registry.close();
  return {
    dataDir,
    devices,
    app,
    start: () => startChildBroker('mqsec', [dataDir]),
    cleanup,
  };
}
