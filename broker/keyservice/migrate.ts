/**
 * Moving to a key service in its own process (docs/operations.md, "Key
 * service in its own process"): everything the embedded key service kept in
 * the broker's data directory (epochs, sequence allocations, K_ks) goes to
 * the key service's own directory and is deleted from the broker's; principal
 * keys still stored whole by a registry from before the split (§14.2) are
 * split on the way, their K_ks written straight to the new directory. Epochs
 * and allocations only move forward (importState), so no group key epoch and
 * no sequence range is handed out twice. The broker must be stopped.
 */
import { existsSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { acquireDirLock } from '../registry/lock.js';
import { SqliteRegistry } from '../registry/registry.js';
import { KEY_SERVICE_DB_FILE, KEY_SERVICE_KEY_FILE, SqliteKeyServiceStore } from './store.js';

export interface MigrationReport {
  /** Groups whose epoch counter moved over. */
  groups: number;
  /** Members whose K_ks moved over from the embedded store. */
  moved: number;
  /** Registry rows whose whole K was split now. */
  split: number;
}

export async function migrateToExternalKeyService(brokerDir: string, keyServiceDir: string): Promise<MigrationReport> {
  const from = resolve(brokerDir);
  const to = resolve(keyServiceDir);
  if (from === to) throw new Error('the key service needs a directory of its own, not the broker\'s');
  const lock = acquireDirLock(from);
  const target = SqliteKeyServiceStore.open(to);
  try {
    let groups = 0;
    let moved = 0;
    const embeddedDb = join(from, KEY_SERVICE_DB_FILE);
    if (existsSync(embeddedDb)) {
      const embedded = new SqliteKeyServiceStore(embeddedDb);
      try {
        const state = await embedded.exportState();
        groups = state.epochs.length;
        moved = state.keys.length;
        await target.importState(state);
        for (const [, k] of state.keys) k.key.fill(0);
      } finally {
        await embedded.close();
      }
    }
    const registry = SqliteRegistry.open(from, { memberKeys: target });
    const split = registry.splitAtOpen;
    try {
      await registry.setKeyServiceMode('external');
    } finally {
      await registry.close();
    }
    for (const f of [KEY_SERVICE_DB_FILE, `${KEY_SERVICE_DB_FILE}-wal`, `${KEY_SERVICE_DB_FILE}-shm`, KEY_SERVICE_KEY_FILE]) rmSync(join(from, f), { force: true });
    return { groups, moved, split };
  } finally {
    await target.close();
    lock.release();
  }
}
