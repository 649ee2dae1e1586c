/**
 * What the key service must remember across restarts (docs/protocol.md
 * §14.2-§14.4): the last epoch of every group (epochs only move forward),
 * each principal's publisher sequence allocation (ranges never handed out
 * twice under a key), and each member's K_ks (written by provisioning, the
 * only secret the key service keeps; the broker's registry never holds it).
 * Group keys themselves are never stored: a restarted key service moves every
 * group to a new epoch.
 *
 * One asynchronous interface, three implementations (memory for tests, SQLite
 * for the key service's own data directory, PostgreSQL for replicas sharing
 * one state: pg-store.ts), one shared test suite (test/broker/keyservice-store.ts).
 * Raising an epoch and allocating a range are each one atomic statement in
 * the durable stores, so two processes on the same state never get the same
 * epoch or overlapping ranges (§14.13).
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MqsecError } from '../../firmware/core/errors.js';
import { loadOrCreateMasterKey, openDeviceKey, sealDeviceKey } from '../registry/secrets.js';

/** The key service's files in its data directory (the embedded one shares the broker's directory, never these files' role). */
export const KEY_SERVICE_DB_FILE = 'keyservice.db';
/** Seals K_ks at rest (mode 0600); a separate file from the registry's master key. Replicas on PostgreSQL all hold the same one. */
export const KEY_SERVICE_KEY_FILE = 'keyservice.key';

/** A member's K_ks and the identity of the principal key it was derived from (created-at/key version). */
export interface MemberKey {
  identity: string;
  key: Uint8Array;
}

/** Where provisioning writes K_ks (`mqsec device add|rotate`, `mqsec app add`). */
export interface MemberKeySink {
  putMemberKey(id: string, identity: string, ksKey: Uint8Array): Promise<void>;
  deleteMemberKey(id: string): Promise<void>;
}

/**
 * A sink that can also write at once, inside another store's synchronous
 * transaction (the SQLite registry's split of old principal keys at open).
 */
export interface SyncMemberKeySink extends MemberKeySink {
  putMemberKeyNow(id: string, identity: string, ksKey: Uint8Array): void;
}

export function isSyncSink(s: MemberKeySink): s is SyncMemberKeySink {
  return typeof (s as Partial<SyncMemberKeySink>).putMemberKeyNow === 'function';
}

/** The store's database cannot be reached now (the request may be tried again later). */
export class KeyStoreUnavailableError extends MqsecError {
  constructor(readonly reason: string) {
    super('STORAGE', `key service store unavailable: ${reason}`);
    this.name = 'KeyStoreUnavailableError';
  }
}

export interface KeyServiceStore extends MemberKeySink {
  /** Durably raises the group's epoch by one and returns it (1 for a new group). Atomic: never the same epoch twice. */
  nextEpoch(filter: string): Promise<number>;
  /** Durably reserves [base, base + size) of the principal's sequence space and returns base. Atomic: ranges never overlap. */
  allocateSeq(id: string, size: number): Promise<number>;
  /** Starts the principal's allocation over at 0 (only together with a re-key of every group it writes). */
  resetSeq(id: string): Promise<void>;
  /** The member's K_ks (a copy: the caller wipes it), or undefined. */
  memberKey(id: string): Promise<MemberKey | undefined>;
  /** Everything, for moving a key service's state elsewhere (`mqsec keyservice migrate`). */
  exportState(): Promise<KeyServiceState>;
  /** Takes over another store's state: epochs and allocations only move forward, keys are replaced. */
  importState(s: KeyServiceState): Promise<void>;
  close(): Promise<void>;
}

export interface KeyServiceState {
  epochs: [string, number][];
  seqs: [string, number][];
  keys: [string, MemberKey][];
}

export class MemoryKeyServiceStore implements KeyServiceStore, SyncMemberKeySink {
  private readonly epochs = new Map<string, number>();
  private readonly seqs = new Map<string, number>();
  private readonly keys = new Map<string, MemberKey>();
  async nextEpoch(filter: string): Promise<number> {
    const e = (this.epochs.get(filter) ?? 0) + 1;
    this.epochs.set(filter, e);
    return e;
  }
  async allocateSeq(id: string, size: number): Promise<number> {
    const base = this.seqs.get(id) ?? 0;
    this.seqs.set(id, base + size);
    return base;
  }
  async resetSeq(id: string): Promise<void> {
    this.seqs.set(id, 0);
  }
  putMemberKeyNow(id: string, identity: string, ksKey: Uint8Array): void {
    this.keys.get(id)?.key.fill(0);
    this.keys.set(id, { identity, key: ksKey.slice() });
  }
  async putMemberKey(id: string, identity: string, ksKey: Uint8Array): Promise<void> {
    this.putMemberKeyNow(id, identity, ksKey);
  }
  async deleteMemberKey(id: string): Promise<void> {
    this.keys.get(id)?.key.fill(0);
    this.keys.delete(id);
  }
  async memberKey(id: string): Promise<MemberKey | undefined> {
    const k = this.keys.get(id);
    return k && { identity: k.identity, key: k.key.slice() };
  }
  async exportState(): Promise<KeyServiceState> {
    return { epochs: [...this.epochs], seqs: [...this.seqs], keys: [...this.keys].map(([id, k]) => [id, { identity: k.identity, key: k.key.slice() }]) };
  }
  async importState(s: KeyServiceState): Promise<void> {
    for (const [f, e] of s.epochs) this.epochs.set(f, Math.max(e, this.epochs.get(f) ?? 0));
    for (const [id, n] of s.seqs) this.seqs.set(id, Math.max(n, this.seqs.get(id) ?? 0));
    for (const [id, k] of s.keys) this.putMemberKeyNow(id, k.identity, k.key);
  }
  async close(): Promise<void> {
    this.keys.forEach((k) => k.key.fill(0));
    this.keys.clear();
  }
}

/**
 * The key service's SQLite file. K_ks rows are sealed (AES-256-GCM, bound to
 * the member id) under `keyservice.key` next to the database, so a copy of
 * the database alone opens nothing. `secure_delete` overwrites what a rotate
 * or delete replaces, so old keys do not linger in free pages. The epoch and
 * the range are each one INSERT .. ON CONFLICT .. RETURNING, so processes
 * sharing the file (the CLI provisioning while the service runs) stay apart.
 */
export class SqliteKeyServiceStore implements KeyServiceStore, SyncMemberKeySink {
  private readonly db: Database.Database;
  private readonly master: Buffer;
  private readonly epochStmt: Database.Statement;
  private readonly seqStmt: Database.Statement;
  private readonly resetStmt: Database.Statement;

  /** Opens (creating) the store in a key service data directory. */
  static open(dir: string): SqliteKeyServiceStore {
    const d = resolve(dir);
    mkdirSync(d, { recursive: true, mode: 0o700 });
    return new SqliteKeyServiceStore(join(d, KEY_SERVICE_DB_FILE));
  }

  /** `file`: the database; the sealing key lives beside it (keyservice.key). */
  constructor(file: string) {
    this.master = loadOrCreateMasterKey(join(resolve(file, '..'), KEY_SERVICE_KEY_FILE));
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('secure_delete = ON');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS group_epochs (filter TEXT PRIMARY KEY, epoch INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS seq_alloc (principal TEXT PRIMARY KEY, next INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS member_keys (principal TEXT PRIMARY KEY, identity TEXT NOT NULL, key_sealed BLOB NOT NULL);
    `);
    this.epochStmt = this.db.prepare(
      'INSERT INTO group_epochs (filter, epoch) VALUES (?, 1) ON CONFLICT (filter) DO UPDATE SET epoch = epoch + 1 RETURNING epoch',
    );
    this.seqStmt = this.db.prepare(
      'INSERT INTO seq_alloc (principal, next) VALUES (?, ?) ON CONFLICT (principal) DO UPDATE SET next = next + excluded.next RETURNING next',
    );
    this.resetStmt = this.db.prepare('INSERT INTO seq_alloc (principal, next) VALUES (?, 0) ON CONFLICT (principal) DO UPDATE SET next = 0');
  }
  async nextEpoch(filter: string): Promise<number> {
    return (this.epochStmt.get(filter) as { epoch: number }).epoch;
  }
  async allocateSeq(id: string, size: number): Promise<number> {
    return (this.seqStmt.get(id, size) as { next: number }).next - size;
  }
  async resetSeq(id: string): Promise<void> {
    this.resetStmt.run(id);
  }
  putMemberKeyNow(id: string, identity: string, ksKey: Uint8Array): void {
    this.db
      .prepare('INSERT INTO member_keys (principal, identity, key_sealed) VALUES (?, ?, ?) ON CONFLICT (principal) DO UPDATE SET identity = excluded.identity, key_sealed = excluded.key_sealed')
      .run(id, identity, sealDeviceKey(this.master, `ks|${id}|${identity}`, 0, ksKey));
  }
  async putMemberKey(id: string, identity: string, ksKey: Uint8Array): Promise<void> {
    this.putMemberKeyNow(id, identity, ksKey);
  }
  async deleteMemberKey(id: string): Promise<void> {
    this.db.prepare('DELETE FROM member_keys WHERE principal = ?').run(id);
  }
  private memberKeyNow(id: string): MemberKey | undefined {
    const r = this.db.prepare('SELECT identity, key_sealed FROM member_keys WHERE principal = ?').get(id) as { identity: string; key_sealed: Buffer } | undefined;
    return r && { identity: r.identity, key: openDeviceKey(this.master, `ks|${id}|${r.identity}`, 0, r.key_sealed) };
  }
  async memberKey(id: string): Promise<MemberKey | undefined> {
    return this.memberKeyNow(id);
  }
  async exportState(): Promise<KeyServiceState> {
    const epochs = (this.db.prepare('SELECT filter, epoch FROM group_epochs').all() as { filter: string; epoch: number }[]).map((r) => [r.filter, r.epoch] as [string, number]);
    const seqs = (this.db.prepare('SELECT principal, next FROM seq_alloc').all() as { principal: string; next: number }[]).map((r) => [r.principal, r.next] as [string, number]);
    const ids = (this.db.prepare('SELECT principal FROM member_keys').all() as { principal: string }[]).map((r) => r.principal);
    return { epochs, seqs, keys: ids.map((id) => [id, this.memberKeyNow(id)!]) };
  }
  async importState(s: KeyServiceState): Promise<void> {
    this.db.transaction(() => {
      const e = this.db.prepare('INSERT INTO group_epochs (filter, epoch) VALUES (?, ?) ON CONFLICT (filter) DO UPDATE SET epoch = MAX(epoch, excluded.epoch)');
      for (const [f, n] of s.epochs) e.run(f, n);
      const q = this.db.prepare('INSERT INTO seq_alloc (principal, next) VALUES (?, ?) ON CONFLICT (principal) DO UPDATE SET next = MAX(next, excluded.next)');
      for (const [id, n] of s.seqs) q.run(id, n);
      for (const [id, k] of s.keys) this.putMemberKeyNow(id, k.identity, k.key);
    }).immediate();
  }
  async close(): Promise<void> {
    this.master.fill(0);
    if (this.db.open) this.db.close();
  }
}
