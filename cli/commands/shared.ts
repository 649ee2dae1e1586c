/** Helpers shared by the admin commands (registry access, config files). */
import { existsSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { DB_FILE, Registry, type DeviceRecord } from '../../broker/registry/registry.js';
import { SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { CliError } from '../command.js';
import { toHex } from '../../firmware/core/bytes.js';

/**
 * Opens the registry in `dataDir` for one command. Commands that only read or
 * change existing entries pass `create: false`, so a mistyped --data is an
 * error instead of a new empty registry.
 */
export async function withRegistry<T>(
  dataDir: string,
  f: (r: Registry) => T | Promise<T>,
  opts: { create?: boolean; keyServiceData?: string } = {},
): Promise<T> {
  if (opts.create === false && !existsSync(join(dataDir, DB_FILE))) {
    throw new CliError(`no mqsec registry in ${dataDir} (create one with \`mqsec device add\` or \`mqsec broker\`)`);
  }
  // §14.2: K_ks goes to the key service's own directory when it runs as its own process
  const ks = opts.keyServiceData !== undefined ? SqliteKeyServiceStore.open(opts.keyServiceData) : undefined;
  try {
    const r = Registry.open(dataDir, ks ? { memberKeys: ks } : {});
    try {
      return await f(r);
    } finally {
      r.close();
    }
  } finally {
    ks?.close();
  }
}

/** Where provisioning writes: the broker's data directory, and the key service's when it runs on its own. */
export interface ProvisioningTarget {
  data: string;
  /** The key service's data directory (`mqsec keyservice --data`); omitted: the embedded key service's store in `data`. */
  keyserviceData?: string;
}

/**
 * The one provisioning path for every mqsec principal (`mqsec device add`,
 * `mqsec app add`): a fresh K, split into K_auth | K_psk for the broker's
 * registry and K_ks for the key service (docs/protocol.md §14.2). K is
 * returned to be shown once / written to the device config, never stored.
 */
export function provisionPrincipal(t: ProvisioningTarget, id: string, role: string): Promise<{ key: Uint8Array; device: DeviceRecord }> {
  return withRegistry(t.data, (r) => r.addDevice(id, role), { keyServiceData: t.keyserviceData });
}

/** A new K for an existing principal (`mqsec device rotate`), split the same way; the old one stops working. */
export function rotatePrincipal(t: ProvisioningTarget, id: string): Promise<{ key: Uint8Array; device: DeviceRecord }> {
  return withRegistry(
    t.data,
    (r) => {
      if (!r.getDevice(id)) throw new CliError(`unknown device "${id}"`);
      return r.rotateDevice(id);
    },
    { create: false, keyServiceData: t.keyserviceData },
  );
}

export interface DeviceConfig {
  id: string;
  key: string;
  broker: { host: string; port: number };
}

/** Writes the device's config file (id, key hex, broker endpoint) with mode 0600. */
export function writeDeviceConfig(path: string, id: string, key: Uint8Array, host: string, port: number): DeviceConfig {
  const config: DeviceConfig = { id, key: toHex(key), broker: { host, port } };
  writeFileSync(path, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
  chmodSync(path, 0o600); // an existing file keeps its old mode on write
  return config;
}

export function deviceLine(d: DeviceRecord): string {
  return `${d.id.padEnd(24)} ${d.role.padEnd(12)} ${d.status.padEnd(8)} key v${d.keyVersion}  created ${new Date(d.createdAt).toISOString()}`;
}
