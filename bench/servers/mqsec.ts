/**
 * The mqsec broker for the benchmarks: a throw-away data directory with a
 * registry provisioned up front (devices with fresh keys, one role for the
 * benchmark), then the broker in its own process (bench/servers/child.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteRegistry } from '../../broker/registry/registry.js';
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

/**
 * End-to-end roles (docs/protocol.md §14.1): writers publish into their own
 * group `<tree>/<id>/#` (mode e2e, one group per writer), readers may
 * subscribe to the whole tree and so read every group of it. Two trees, so
 * the 1:1 pairs and the fan-out members are told only about their own groups.
 */
export const E2E_ROLES = {
  pairsWriter: { name: 'benche2epub', publish: 'e2e/%u/#' },
  pairsReader: { name: 'benche2esub', subscribe: 'e2e/#' },
  fanWriter: { name: 'benchfanpub', publish: 'fan/%u/#' },
  fanReader: { name: 'benchfansub', subscribe: 'fan/#' },
} as const;

/** A principal to provision: a bare id gets BENCH_ROLE. */
export type BenchPrincipal = string | { id: string; role: string };

export async function provisionMqsecBroker(principals: BenchPrincipal[]): Promise<MqsecBrokerSetup> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqsec-bench-broker-'));
  const cleanup = removeOnExit(dataDir, (d) => fs.rmSync(d, { recursive: true, force: true }));
  const registry = SqliteRegistry.open(dataDir);
  const devices: ProvisionedDevice[] = [];
  const app = { name: 'benchapp', password: 'bench-app-password' };
  try {
    await registry.addRole(BENCH_ROLE);
    await registry.addRule(BENCH_ROLE, 'publish', 'sensors/%u/#');
    await registry.addRule(BENCH_ROLE, 'subscribe', 'sensors/#');
    for (const r of Object.values(E2E_ROLES)) {
      await registry.addRole(r.name);
      if ('publish' in r) await registry.addRule(r.name, 'publish', r.publish, 'e2e');
      else await registry.addRule(r.name, 'subscribe', r.subscribe);
    }
    for (const p of principals) {
      const { id, role } = typeof p === 'string' ? { id: p, role: BENCH_ROLE } : p;
      const { key } = await registry.addDevice(id, role);
      devices.push({ id, key });
    }
    await registry.addAccount(app.name, 'app', app.password);
  } catch (e) {
    await registry.close();
    cleanup();
    throw e;
  }
  await registry.close();
  return {
    dataDir,
    devices,
    app,
    start: () => startChildBroker('mqsec', [dataDir]),
    cleanup,
  };
}
