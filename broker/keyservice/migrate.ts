/**
 * Moving key service state (docs/operations.md, "Key service in its own
 * process", "Scaling"):
 *
 * - out of a broker: everything the embedded key service kept in the
 *   broker's data directory (epochs, sequence allocations, K_ks) goes to the
 *   key service's own store and is deleted from the broker's; principal keys
 *   still stored whole by a registry from before the split (§14.2) are split
 *   on the way. The broker must be stopped.
 * - from a key service's own SQLite directory to PostgreSQL, for replicas
 *   (§14.13): its state goes to the database and its keyservice.db is
 *   deleted, so it cannot be started again with the old epochs. The key
 *   service must be stopped.
 *
 * The target is SQLite in the key service's directory, or PostgreSQL (`db`;
 * the directory then holds the replicas' keyservice.key). Epochs and
 * allocations only move forward (importState), so no group key epoch and no
 * sequence range is handed out twice.
 */
import { existsSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { acquireDirLock } from '../registry/lock.js';
import { DB_FILE, SqliteRegistry } from '../registry/registry.js';
import { PgKeyServiceStore } from './pg-store.js';
import { KEY_SERVICE_DB_FILE, KEY_SERVICE_KEY_FILE, MemoryKeyServiceStore, SqliteKeyServiceStore, type KeyServiceStore } from './store.js';

export interface MigrationReport {
  /** Groups whose epoch counter moved over. */
  groups: number;
  /** Members whose K_ks moved over from the source store. */
  moved: number;
  /** Registry rows whose whole K was split now. */
  split: number;
  /** What `from` was. */
  source: 'broker' | 'keyservice';
}

const sqliteFiles = [KEY_SERVICE_DB_FILE, `${KEY_SERVICE_DB_FILE}-wal`, `${KEY_SERVICE_DB_FILE}-shm`];

export async function migrateToExternalKeyService(brokerDir: string, keyServiceDir: string, opts: { db?: string } = {}): Promise<MigrationReport> {
  const from = resolve(brokerDir);
  const to = resolve(keyServiceDir);
  const isBroker = existsSync(join(from, DB_FILE));
  if (!isBroker && !opts.db) throw new Error(`${from} holds no broker registry: give the broker's data directory (or --db to move a key service's directory into PostgreSQL)`);
  if (!isBroker && !existsSync(join(from, KEY_SERVICE_DB_FILE))) throw new Error(`${from} holds neither a broker registry nor a key service store`);
  if (from === to && (isBroker || !opts.db)) throw new Error('the key service needs a directory of its own, not the broker\'s');
  const lock = acquireDirLock(from);
  let target: KeyServiceStore | undefined;
  try {
    target = opts.db ? await PgKeyServiceStore.open({ url: opts.db, dataDir: to, holder: 'migrate' }) : SqliteKeyServiceStore.open(to);
    // everything is gathered first (the registry's split of old keys writes synchronously), then moved in one import
    const staging = new MemoryKeyServiceStore();
    let groups = 0;
    let moved = 0;
    const sourceDb = join(from, KEY_SERVICE_DB_FILE);
    if (existsSync(sourceDb)) {
      const source = new SqliteKeyServiceStore(sourceDb);
      try {
        const state = await source.exportState();
        groups = state.epochs.length;
        moved = state.keys.length;
        await staging.importState(state);
        for (const [, k] of state.keys) k.key.fill(0);
      } finally {
        await source.close();
      }
    }
    let split = 0;
    if (isBroker) {
      const registry = SqliteRegistry.open(from, { memberKeys: staging });
      split = registry.splitAtOpen;
      try {
        await registry.setKeyServiceMode('external');
      } finally {
        await registry.close();
      }
    }
    const all = await staging.exportState();
    await target.importState(all);
    for (const [, k] of all.keys) k.key.fill(0);
    await staging.close();
    // the source's copy goes: started again, it would hand out epochs and ranges from its old counters
    for (const f of sqliteFiles) rmSync(join(from, f), { force: true });
    if (from !== to) rmSync(join(from, KEY_SERVICE_KEY_FILE), { force: true });
    return { groups, moved, split, source: isBroker ? 'broker' : 'keyservice' };
  } finally {
    await target?.close();
    lock.release();
  }
}
