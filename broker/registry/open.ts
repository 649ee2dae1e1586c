/**
 * Opens the registry a command or a broker names: SQLite in the data
 * directory by default (one node), or PostgreSQL with `--db postgres://...`
 * (several nodes sharing one registry; the data directory still holds the
 * node's master key, TLS files and lock).
 */
import type { MemberKeySink } from '../keyservice/store.js';
import { PgRegistry } from './pg-registry.js';
import { SqliteRegistry } from './registry.js';
import { RegistryError, type Registry } from './store.js';

export interface OpenRegistryOptions {
  dataDir: string;
  /** A postgres:// (or postgresql://) URL; absent: SQLite in dataDir. */
  db?: string;
  now?: () => number;
  /** Where provisioning writes K_ks (§14.2); see RegistryOptions.memberKeys. */
  memberKeys?: MemberKeySink | null;
}

export const DB_URL_EXPECTED = '--db must be a postgres://user@host:port/database URL (without --db the registry is SQLite in the data directory)';

/** True when `db` names a PostgreSQL database. */
export function isPostgresUrl(db: string | undefined): db is string {
  return db !== undefined && /^postgres(ql)?:\/\//i.test(db);
}

export async function openRegistry(opts: OpenRegistryOptions): Promise<Registry> {
  if (opts.db === undefined || opts.db === '') return SqliteRegistry.open(opts.dataDir, { now: opts.now, memberKeys: opts.memberKeys });
  if (!isPostgresUrl(opts.db)) {
    throw new RegistryError(DB_URL_EXPECTED);
  }
  return PgRegistry.open({ url: opts.db, dataDir: opts.dataDir, now: opts.now, memberKeys: opts.memberKeys });
}

/**
 * Splits a PostgreSQL URL into the URL without its password and the password
 * (decoded), so that a process handing the database to processes it starts
 * can pass the password through their environment (`PGPASSWORD`, which
 * node-postgres reads when the URL has none) rather than on their command
 * lines, which every local user can read (`ps`, /proc/PID/cmdline).
 */
export function splitDbPassword(db: string): { url: string; password?: string } {
  let u: URL;
  try {
    u = new URL(db);
  } catch {
    return { url: db };
  }
  // node-postgres also takes ?password=... in the query string
  const inQuery = u.searchParams.get('password');
  if (!u.password && inQuery === null) return { url: db };
  const password = u.password ? decodeURIComponent(u.password) : inQuery!;
  u.password = '';
  u.searchParams.delete('password');
  return { url: u.toString(), password };
}
