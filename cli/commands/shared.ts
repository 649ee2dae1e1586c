/** Helpers shared by the admin commands (registry access, config files). */
import { existsSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { DB_FILE, Registry, type DeviceRecord } from '../../broker/registry/registry.js';
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
  opts: { create?: boolean } = {},
): Promise<T> {
  if (opts.create === false && !existsSync(join(dataDir, DB_FILE))) {
    throw new CliError(`no mqsec registry in ${dataDir} (create one with \`mqsec device add\` or \`mqsec broker\`)`);
  }
  const r = Registry.open(dataDir);
  try {
    return await f(r);
  } finally {
    r.close();
  }
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
