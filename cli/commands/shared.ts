/** Helpers shared by the admin commands (registry access, config files). */
import { existsSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { DB_FILE, type DeviceRecord } from '../../broker/registry/registry.js';
import { KeyStoreUnavailableError, SqliteKeyServiceStore, type KeyServiceStore } from '../../broker/keyservice/store.js';
import { isPostgresStoreUrl, PgKeyServiceStore } from '../../broker/keyservice/pg-store.js';
import { DB_URL_EXPECTED, isPostgresUrl, openRegistry } from '../../broker/registry/open.js';
import { RegistryError, RegistryUnavailableError, type Registry } from '../../broker/registry/store.js';
import { CliError, parsePort } from '../command.js';
import { toHex } from '../../firmware/core/bytes.js';

export const DB_OPTION_HELP = 'registry in PostgreSQL (postgres://user@host:port/db, shared by several broker nodes) instead of SQLite in the data directory';

/** sysexits.h EX_UNAVAILABLE: the registry's database could not be reached. */
export const EXIT_UNAVAILABLE = 69;

/**
 * Opens the registry for one command: SQLite in `o.data`, or PostgreSQL at
 * `o.db` (the data directory then holds only the master key). Commands that
 * only read or change existing entries pass `create: false`, so a mistyped
 * --data is an error instead of a new empty registry. A bad URL or an
 * unreachable database is one line and a non-zero exit code.
 */
export async function withRegistry<T>(
  o: string | { data: string; db?: string },
  f: (r: Registry) => T | Promise<T>,
  opts: { create?: boolean; keyServiceData?: string; keyServiceDb?: string } = {},
): Promise<T> {
  const { data: dataDir, db } = typeof o === 'string' ? { data: o, db: undefined } : o;
  if (db !== undefined && !isPostgresUrl(db)) throw registryCliError(new RegistryError(DB_URL_EXPECTED));
  if (opts.create === false && !isPostgresUrl(db) && !existsSync(join(dataDir, DB_FILE))) {
    throw new CliError(`no mqsec registry in ${dataDir} (create one with \`mqsec device add\` or \`mqsec broker\`)`);
  }
  // §14.2: K_ks goes to the key service's own store when it runs as its own process
  const ks = await openKeyServiceSink(opts.keyServiceData, opts.keyServiceDb);
  try {
    let r: Registry;
    try {
      r = await openRegistry({ dataDir, db, memberKeys: ks });
    } catch (e) {
      throw registryCliError(e);
    }
    try {
      return await f(r);
    } catch (e) {
      throw registryCliError(e);
    } finally {
      await r.close();
    }
  } finally {
    await ks?.close();
  }
}

/**
 * The key service's store for provisioning: SQLite in `--keyservice-data`,
 * or the replicas' PostgreSQL with `--keyservice-db` (then --keyservice-data
 * names a directory holding the replicas' keyservice.key, which seals K_ks).
 */
async function openKeyServiceSink(data: string | undefined, db: string | undefined): Promise<KeyServiceStore | undefined> {
  if (db === undefined) return data !== undefined ? SqliteKeyServiceStore.open(data) : undefined;
  if (!isPostgresStoreUrl(db)) throw new CliError('--keyservice-db must be a postgres://user@host:port/database URL (the key service replicas\' --db)');
  if (data === undefined) throw new CliError('--keyservice-db needs --keyservice-data DIR: a directory holding the key service replicas\' keyservice.key');
  try {
    return await PgKeyServiceStore.open({ url: db, dataDir: data, holder: 'provisioning' });
  } catch (e) {
    if (e instanceof KeyStoreUnavailableError) throw new CliError(oneLine(e.message), EXIT_UNAVAILABLE);
    throw registryCliError(e);
  }
}

/** A registry failure as the CLI prints it: one line, exit 69 when the database is unreachable. */
export function registryCliError(e: unknown): unknown {
  if (e instanceof RegistryUnavailableError) return new CliError(oneLine(e.message), EXIT_UNAVAILABLE);
  if (e instanceof RegistryError) return new CliError(oneLine(e.message));
  return e;
}

const oneLine = (s: string) => s.replace(/\s*\n\s*/g, ' ');

/** Where provisioning writes: the broker's registry, and the key service's directory when it runs on its own. */
export interface ProvisioningTarget {
  data: string;
  /** The registry in PostgreSQL (several broker nodes); omitted: SQLite in `data`. */
  db?: string;
  /** The key service's data directory (`mqsec keyservice --data`); omitted: the embedded key service's store in `data`. */
  keyserviceData?: string;
  /** The key service replicas' PostgreSQL (`mqsec keyservice --db`); keyserviceData then holds their keyservice.key. */
  keyserviceDb?: string;
}

/**
 * The one provisioning path for every mqsec principal (`mqsec device add`,
 * `mqsec app add`): a fresh K, split into K_auth | K_psk for the broker's
 * registry and K_ks for the key service (docs/protocol.md §14.2). K is
 * returned to be shown once / written to the device config, never stored.
 */
export function provisionPrincipal(t: ProvisioningTarget, id: string, role: string): Promise<{ key: Uint8Array; device: DeviceRecord }> {
  return withRegistry(t, (r) => r.addDevice(id, role), { keyServiceData: t.keyserviceData, keyServiceDb: t.keyserviceDb });
}

/** A new K for an existing principal (`mqsec device rotate`), split the same way; the old one stops working. */
export function rotatePrincipal(t: ProvisioningTarget, id: string): Promise<{ key: Uint8Array; device: DeviceRecord }> {
  return withRegistry(
    t,
    async (r) => {
      if (!(await r.getDevice(id))) throw new CliError(`unknown device "${id}"`);
      return r.rotateDevice(id);
    },
    { create: false, keyServiceData: t.keyserviceData, keyServiceDb: t.keyserviceDb },
  );
}

export interface DeviceConfig {
  id: string;
  key: string;
  /** `flavour: "stock"`: a stock broker with the key service beside it (docs/protocol.md §15.1). */
  broker: { host: string; port: number; flavour?: 'stock' };
}

/** Writes the device's config file (id, key hex, broker endpoint) with mode 0600. */
export function writeDeviceConfig(path: string, id: string, key: Uint8Array, host: string, port: number, flavour?: 'stock'): DeviceConfig {
  const config: DeviceConfig = { id, key: toHex(key), broker: { host, port, ...(flavour ? { flavour } : {}) } };
  writeFileSync(path, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
  chmodSync(path, 0o600); // an existing file keeps its old mode on write
  return config;
}

export function deviceLine(d: DeviceRecord): string {
  return `${d.id.padEnd(24)} ${d.role.padEnd(12)} ${d.status.padEnd(8)} key v${d.keyVersion}  created ${new Date(d.createdAt).toISOString()}`;
}

/** `--keyservice-data` of the principal commands (device, app). */
export const KS_DATA_HELP = 'data directory of a key service run as its own process (`mqsec keyservice --data`): K_ks is written there, never to --data';

/** `--keyservice-db` of the principal commands (device, app). */
export const KS_DB_HELP = 'PostgreSQL of key service replicas (`mqsec keyservice --db`): K_ks is written there, sealed under the keyservice.key in --keyservice-data';

/** Options the principal commands (device, app) share for printing a key and writing its config file. */
export interface KeyOutputOpts {
  data: string;
  db?: string;
  keyserviceData?: string;
  keyserviceDb?: string;
  json?: boolean;
  config?: string;
  brokerHost?: string;
  brokerPort?: string;
  brokerFlavour?: string;
}

/** `--broker-flavour` of the config-writing commands. */
export const BROKER_FLAVOUR_HELP = 'mqsec (default) or stock: the broker is a stock broker with `mqsec keyservice --flavour ...` beside it (docs/protocol.md §15); written to the config as broker.flavour';

/** A config file's broker endpoint. */
export interface ConfigBroker {
  host: string;
  port: number;
  flavour?: 'stock';
}

export const DEFAULT_BROKER = { host: '127.0.0.1', port: 1883 };

/**
 * The broker endpoint of an existing device or app config for `id`; refuses a
 * file that belongs to another principal or is not JSON (it is never overwritten).
 */
export function readExistingConfig(path: string, id: string, kind: 'device' | 'app'): ConfigBroker | undefined {
  if (!existsSync(path)) return undefined;
  let c: { id?: unknown; broker?: { host?: unknown; port?: unknown; flavour?: unknown } };
  try {
    c = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new CliError(`${path} is not ${kind === 'app' ? 'an app' : 'a device'} config (not JSON): not overwriting it`);
  }
  if (c.id !== id) throw new CliError(`${path} is the config of ${kind === 'device' ? 'device ' : ''}"${String(c.id)}", not "${id}": not overwriting it`);
  return {
    host: typeof c.broker?.host === 'string' ? c.broker.host : DEFAULT_BROKER.host,
    port: typeof c.broker?.port === 'number' ? c.broker.port : DEFAULT_BROKER.port,
    ...(c.broker?.flavour === 'stock' ? { flavour: 'stock' as const } : {}),
  };
}

/** The broker a config file names: the flags, else the config being rewritten, else the default. */
export function configBroker(o: KeyOutputOpts, existing?: ConfigBroker): ConfigBroker {
  if (o.brokerFlavour !== undefined && o.brokerFlavour !== 'mqsec' && o.brokerFlavour !== 'stock') throw new CliError('--broker-flavour must be mqsec or stock');
  const flavour = o.brokerFlavour !== undefined ? o.brokerFlavour : existing?.flavour;
  return {
    host: o.brokerHost ?? existing?.host ?? DEFAULT_BROKER.host,
    port: o.brokerPort !== undefined ? parsePort(o.brokerPort) : (existing?.port ?? DEFAULT_BROKER.port),
    ...(flavour === 'stock' ? { flavour } : {}),
  };
}
