/**
 * What the key service must remember across restarts (docs/protocol.md
 * §14.3, §14.4): the last epoch of every group (epochs only move forward) and
 * each principal's publisher sequence allocation (ranges never handed out
 * twice under a key). Group keys themselves are never stored: a restarted key
 * service moves every group to a new epoch.
 *
 * One interface, two implementations (memory for tests and embedding,
 * SQLite for a key service with its own data file), one shared test suite.
 */
import Database from 'better-sqlite3';

export interface KeyServiceStore {
  /** Durably raises the group's epoch by one and returns it (1 for a new group). */
  nextEpoch(filter: string): number;
  /** Durably reserves [base, base + size) of the principal's sequence space and returns base. */
  allocateSeq(id: string, size: number): number;
  /** Starts the principal's allocation over at 0 (only together with a re-key of every group it writes). */
  resetSeq(id: string): void;
  close(): void;
}

export class MemoryKeyServiceStore implements KeyServiceStore {
  private readonly epochs = new Map<string, number>();
  private readonly seqs = new Map<string, number>();
  nextEpoch(filter: string): number {
    const e = (this.epochs.get(filter) ?? 0) + 1;
    this.epochs.set(filter, e);
    return e;
  }
  allocateSeq(id: string, size: number): number {
    const base = this.seqs.get(id) ?? 0;
    this.seqs.set(id, base + size);
    return base;
  }
  resetSeq(id: string): void {
    this.seqs.set(id, 0);
  }
  close(): void {}
}

export class SqliteKeyServiceStore implements KeyServiceStore {
  private readonly db: Database.Database;
  private readonly epochStmt: Database.Statement;
  private readonly seqStmt: Database.Statement;
  private readonly resetStmt: Database.Statement;
  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS group_epochs (filter TEXT PRIMARY KEY, epoch INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS seq_alloc (principal TEXT PRIMARY KEY, next INTEGER NOT NULL);
    `);
    this.epochStmt = this.db.prepare(
      'INSERT INTO group_epochs (filter, epoch) VALUES (?, 1) ON CONFLICT (filter) DO UPDATE SET epoch = epoch + 1 RETURNING epoch',
    );
    this.seqStmt = this.db.prepare(
      'INSERT INTO seq_alloc (principal, next) VALUES (?, ?) ON CONFLICT (principal) DO UPDATE SET next = next + excluded.next RETURNING next',
    );
    this.resetStmt = this.db.prepare('INSERT INTO seq_alloc (principal, next) VALUES (?, 0) ON CONFLICT (principal) DO UPDATE SET next = 0');
  }
  nextEpoch(filter: string): number {
    return (this.epochStmt.get(filter) as { epoch: number }).epoch;
  }
  allocateSeq(id: string, size: number): number {
    return (this.seqStmt.get(id, size) as { next: number }).next - size;
  }
  resetSeq(id: string): void {
    this.resetStmt.run(id);
  }
  close(): void {
    this.db.close();
  }
}
