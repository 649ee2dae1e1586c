/**
 * The key service store on PostgreSQL (npm `pg`), for key service replicas
 * sharing one state (docs/protocol.md §14.13, docs/operations.md "Scaling").
 * Same behaviour as the memory and SQLite stores (test/broker/keyservice-store.ts
 * runs one suite against all three):
 *
 * - Raising an epoch and reserving a sequence range are each ONE statement
 *   (INSERT .. ON CONFLICT DO UPDATE .. RETURNING): PostgreSQL locks the row
 *   and computes the new value from the latest committed one, so two
 *   processes never get the same epoch of a group or overlapping ranges of a
 *   principal, whatever they believe about who is active.
 * - The same statement writes a journal row (who handed out which epoch or
 *   range, when): the evidence that nothing was handed out twice, kept for
 *   `journalDays` (one row per range, i.e. per writer connection, and per
 *   epoch; the active replica prunes it every hour).
 * - K_ks is sealed under the replica's keyservice.key before it leaves the
 *   process; a check value refuses a replica whose keyservice.key is not the
 *   one the database was made with.
 * - A lost or refused connection surfaces as KeyStoreUnavailableError; the
 *   pool reconnects by itself.
 */
import pg from 'pg';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isUnavailable, migrateSchema, openPool, redactUrl } from '../registry/pg-registry.js';
import { RegistryError } from '../registry/store.js';
import { loadOrCreateMasterKey, openDeviceKey, sealDeviceKey } from '../registry/secrets.js';
import { KEY_SERVICE_KEY_FILE, KeyStoreUnavailableError, type KeyServiceState, type KeyServiceStore, type MemberKey } from './store.js';

/** Serialises schema migrations of replicas starting at once ("mqsks" in ASCII; the registry uses "mqsec"). */
const MIGRATION_LOCK = 0x6d71736b73;

/** Versioned migrations of the key service's tables (prefixed ks_, so one database may hold the registry too). Never edit a released step. */
export const KS_PG_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE ks_master_check (id INTEGER PRIMARY KEY CHECK (id = 1), check_value BYTEA NOT NULL);
  CREATE TABLE ks_group_epochs (filter TEXT PRIMARY KEY, epoch BIGINT NOT NULL);
  CREATE TABLE ks_seq_alloc (principal TEXT PRIMARY KEY, next BIGINT NOT NULL);
  CREATE TABLE ks_member_keys (principal TEXT PRIMARY KEY, identity TEXT NOT NULL, key_sealed BYTEA NOT NULL);
  CREATE TABLE ks_journal (
    seq BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    holder TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('epoch', 'seq', 'reset')),
    subject TEXT NOT NULL,
    first BIGINT NOT NULL,
    last BIGINT NOT NULL
  );
  CREATE INDEX ks_journal_at ON ks_journal (at);
  `,
];

export interface PgKeyServiceStoreOptions {
  /** postgres://user:password@host:port/database */
  url: string;
  /** The replica's data directory: keyservice.key (the same file on every replica) and its lock. */
  dataDir: string;
  /** Names this process in the journal (default: a random hex id). */
  holder?: string;
  /** Journal rows older than this are deleted at open and by `prune` (default 7 days). */
  journalDays?: number;
  poolSize?: number;
  connectTimeoutMs?: number;
  now?: () => number;
}

export function isPostgresStoreUrl(db: string | undefined): db is string {
  return db !== undefined && /^postgres(ql)?:\/\//i.test(db);
}

export interface JournalRow {
  seq: number;
  at: number;
  holder: string;
  kind: 'epoch' | 'seq' | 'reset';
  subject: string;
  first: number;
  last: number;
}

export class PgKeyServiceStore implements KeyServiceStore {
  readonly location: string;
  readonly holder: string;
  private readonly pool: pg.Pool;
  private readonly master: Buffer;
  private readonly now: () => number;
  private readonly journalMs: number;
  private closed = false;

  /** Connects, migrates and checks keyservice.key against the database's check value. */
  static async open(opts: PgKeyServiceStoreOptions): Promise<PgKeyServiceStore> {
    if (!isPostgresStoreUrl(opts.url)) throw new RegistryError(`not a PostgreSQL URL: ${redactUrl(opts.url)} (expected postgres://user@host:port/database)`);
    const dir = resolve(opts.dataDir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const s = new PgKeyServiceStore(dir, opts);
    try {
      await s.migrate();
    } catch (e) {
      await s.close();
      if (e instanceof KeyStoreUnavailableError) throw new KeyStoreUnavailableError(`cannot reach ${s.location}: ${e.reason}`);
      if (e instanceof RegistryError) throw e;
      if (isUnavailable(e)) throw new KeyStoreUnavailableError(`cannot reach ${s.location}: ${(e as Error).message}`);
      throw new RegistryError(`key service store at ${s.location}: ${(e as Error).message}`);
    }
    return s;
  }

  private constructor(
    private readonly dataDir: string,
    opts: PgKeyServiceStoreOptions,
  ) {
    this.location = redactUrl(opts.url);
    this.holder = opts.holder ?? Math.random().toString(16).slice(2, 10);
    this.now = opts.now ?? Date.now;
    this.journalMs = (opts.journalDays ?? 7) * 86_400_000;
    this.master = loadOrCreateMasterKey(join(dataDir, KEY_SERVICE_KEY_FILE));
    this.pool = openPool(opts.url, opts.poolSize ?? 4, opts.connectTimeoutMs);
  }

  private async q<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(sql, params);
    } catch (e) {
      if (isUnavailable(e)) throw new KeyStoreUnavailableError((e as Error).message || String((e as { code?: string }).code));
      throw e;
    }
  }

  private async migrate(): Promise<void> {
    let c: pg.PoolClient;
    try {
      c = await this.pool.connect();
    } catch (e) {
      if (isUnavailable(e)) throw new KeyStoreUnavailableError((e as Error).message);
      throw e;
    }
    try {
      await c.query('BEGIN');
      await migrateSchema(c, {
        lock: MIGRATION_LOCK,
        versionTable: 'ks_schema',
        migrations: KS_PG_MIGRATIONS,
        what: 'key service schema',
        keyCheck: {
          table: 'ks_master_check',
          key: this.master,
          label: 'mqsec key service key check',
          mismatch: `the key in ${join(this.dataDir, KEY_SERVICE_KEY_FILE)} is not the one this database was made with: copy the first replica's ${KEY_SERVICE_KEY_FILE} to every replica`,
        },
      });
      await c.query('DELETE FROM ks_journal WHERE at < $1', [this.now() - this.journalMs]);
      await c.query('COMMIT');
      c.release();
    } catch (e) {
      await c.query('ROLLBACK').catch(() => {});
      c.release(true);
      throw e;
    }
  }

  async nextEpoch(filter: string): Promise<number> {
    const r = await this.q<{ epoch: number }>(
      `WITH a AS (
         INSERT INTO ks_group_epochs (filter, epoch) VALUES ($1, 1)
         ON CONFLICT (filter) DO UPDATE SET epoch = ks_group_epochs.epoch + 1 RETURNING epoch
       ), j AS (
         INSERT INTO ks_journal (at, holder, kind, subject, first, last) SELECT $2, $3, 'epoch', $1, epoch, epoch FROM a
       )
       SELECT epoch FROM a`,
      [filter, this.now(), this.holder],
    );
    return r.rows[0]!.epoch;
  }

  async allocateSeq(id: string, size: number): Promise<number> {
    const r = await this.q<{ next: number }>(
      `WITH a AS (
         INSERT INTO ks_seq_alloc (principal, next) VALUES ($1, $2::bigint)
         ON CONFLICT (principal) DO UPDATE SET next = ks_seq_alloc.next + EXCLUDED.next RETURNING next
       ), j AS (
         INSERT INTO ks_journal (at, holder, kind, subject, first, last) SELECT $3, $4, 'seq', $1, next - $2::bigint, next - 1 FROM a
       )
       SELECT next FROM a`,
      [id, size, this.now(), this.holder],
    );
    return r.rows[0]!.next - size;
  }

  async resetSeq(id: string): Promise<void> {
    await this.q(
      `WITH a AS (
         INSERT INTO ks_seq_alloc (principal, next) VALUES ($1, 0) ON CONFLICT (principal) DO UPDATE SET next = 0 RETURNING next
       )
       INSERT INTO ks_journal (at, holder, kind, subject, first, last) SELECT $2, $3, 'reset', $1, 0, 0 FROM a`,
      [id, this.now(), this.holder],
    );
  }

  async putMemberKey(id: string, identity: string, ksKey: Uint8Array): Promise<void> {
    await this.q(
      'INSERT INTO ks_member_keys (principal, identity, key_sealed) VALUES ($1, $2, $3) ON CONFLICT (principal) DO UPDATE SET identity = EXCLUDED.identity, key_sealed = EXCLUDED.key_sealed',
      [id, identity, sealDeviceKey(this.master, `ks|${id}|${identity}`, 0, ksKey)],
    );
  }

  async deleteMemberKey(id: string): Promise<void> {
    await this.q('DELETE FROM ks_member_keys WHERE principal = $1', [id]);
  }

  async memberKey(id: string): Promise<MemberKey | undefined> {
    const r = (await this.q<{ identity: string; key_sealed: Buffer }>('SELECT identity, key_sealed FROM ks_member_keys WHERE principal = $1', [id])).rows[0];
    return r && { identity: r.identity, key: openDeviceKey(this.master, `ks|${id}|${r.identity}`, 0, r.key_sealed) };
  }

  async exportState(): Promise<KeyServiceState> {
    const epochs = (await this.q<{ filter: string; epoch: number }>('SELECT filter, epoch FROM ks_group_epochs')).rows.map((r) => [r.filter, r.epoch] as [string, number]);
    const seqs = (await this.q<{ principal: string; next: number }>('SELECT principal, next FROM ks_seq_alloc')).rows.map((r) => [r.principal, r.next] as [string, number]);
    const keys = (await this.q<{ principal: string; identity: string; key_sealed: Buffer }>('SELECT principal, identity, key_sealed FROM ks_member_keys')).rows.map(
      (r) => [r.principal, { identity: r.identity, key: openDeviceKey(this.master, `ks|${r.principal}|${r.identity}`, 0, r.key_sealed) }] as [string, MemberKey],
    );
    return { epochs, seqs, keys };
  }

  async importState(s: KeyServiceState): Promise<void> {
    let c: pg.PoolClient;
    try {
      c = await this.pool.connect();
    } catch (e) {
      throw isUnavailable(e) ? new KeyStoreUnavailableError((e as Error).message) : e;
    }
    try {
      await c.query('BEGIN');
      for (const [f, n] of s.epochs) {
        await c.query('INSERT INTO ks_group_epochs (filter, epoch) VALUES ($1, $2) ON CONFLICT (filter) DO UPDATE SET epoch = GREATEST(ks_group_epochs.epoch, EXCLUDED.epoch)', [f, n]);
      }
      for (const [id, n] of s.seqs) {
        await c.query('INSERT INTO ks_seq_alloc (principal, next) VALUES ($1, $2) ON CONFLICT (principal) DO UPDATE SET next = GREATEST(ks_seq_alloc.next, EXCLUDED.next)', [id, n]);
      }
      for (const [id, k] of s.keys) {
        await c.query(
          'INSERT INTO ks_member_keys (principal, identity, key_sealed) VALUES ($1, $2, $3) ON CONFLICT (principal) DO UPDATE SET identity = EXCLUDED.identity, key_sealed = EXCLUDED.key_sealed',
          [id, k.identity, sealDeviceKey(this.master, `ks|${id}|${k.identity}`, 0, k.key)],
        );
      }
      await c.query('COMMIT');
      c.release();
    } catch (e) {
      await c.query('ROLLBACK').catch(() => {});
      c.release(true);
      throw isUnavailable(e) ? new KeyStoreUnavailableError((e as Error).message) : e;
    }
  }

  /** Deletes journal rows older than `journalDays`; returns how many. */
  async prune(): Promise<number> {
    return (await this.q('DELETE FROM ks_journal WHERE at < $1', [this.now() - this.journalMs])).rowCount ?? 0;
  }

  /** Who handed out which epoch or range (oldest first), for operators and the replica tests. */
  async journal(kind?: JournalRow['kind']): Promise<JournalRow[]> {
    const r = await this.q<JournalRow>(
      `SELECT seq, at, holder, kind, subject, first, last FROM ks_journal ${kind ? 'WHERE kind = $1' : ''} ORDER BY seq`,
      kind ? [kind] : [],
    );
    return r.rows;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.master.fill(0);
    await this.pool.end().catch(() => {});
  }
}
