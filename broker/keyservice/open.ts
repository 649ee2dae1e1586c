/**
 * Opens the key service store a command names: SQLite in the key service's
 * data directory by default (one process), or PostgreSQL with
 * `--db postgres://...` (replicas sharing one state, §14.13; the data
 * directory then holds keyservice.key, the same file on every replica, and
 * the replica's lock).
 */
import { RegistryError } from '../registry/store.js';
import { isPostgresStoreUrl, PgKeyServiceStore } from './pg-store.js';
import { SqliteKeyServiceStore, type KeyServiceStore } from './store.js';

export const KS_DB_EXPECTED = 'the key service --db must be a postgres://user@host:port/database URL (without it the store is SQLite in the key service data directory)';

export async function openKeyServiceStore(opts: { dataDir: string; db?: string; holder?: string }): Promise<KeyServiceStore> {
  if (opts.db === undefined || opts.db === '') return SqliteKeyServiceStore.open(opts.dataDir);
  if (!isPostgresStoreUrl(opts.db)) throw new RegistryError(KS_DB_EXPECTED);
  return PgKeyServiceStore.open({ url: opts.db, dataDir: opts.dataDir, holder: opts.holder });
}
