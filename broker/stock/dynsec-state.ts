/**
 * What the Mosquitto key service must remember across its own restart
 * (docs/protocol.md §15.3): per principal, a hash of what it mirrored into
 * dynamic security (policy ACLs and bootstrap password), and which phase-2
 * token is installed as the password (ticket id and counter, and whether a
 * connection used it). With this a restarted key service leaves unchanged
 * principals alone and knows the token each device will send next, so
 * devices come back with phase 2, not phase 1.
 *
 * Nothing here is secret: the ticket id and counter travel in every token on
 * the wire, and the fingerprint is a SHA-256 over ACLs and a bootstrap
 * password (itself a MAC under K_auth, and stored by the broker as a salted
 * hash anyway). The keys that make tokens (K_tok, in the ticket store) stay
 * where they were. One SQLite file in the key service's data directory,
 * written once per credential change (the broker's own JSON is rewritten
 * for the same change).
 */
import Database from 'better-sqlite3';

export interface StoredCredential {
  /** SHA-256 (hex) of what was mirrored into dynamic security for the principal. */
  fingerprint: string;
  /** The installed token's ticket id and counter; absent while the password is one nobody knows. */
  sid?: Uint8Array;
  counter?: number;
  /** A connection with the installed token was accepted (§15.3 step 2). */
  accepted: boolean;
}

export const DYNSEC_STATE_FILE = 'stock-mosquitto.db';

export class DynsecStateStore {
  private readonly db: Database.Database;

  private constructor(file: string) {
    this.db = new Database(file);
    if (file !== ':memory:') {
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma('busy_timeout = 5000');
    }
    this.db.exec(`CREATE TABLE IF NOT EXISTS principals (
      id TEXT PRIMARY KEY,
      fingerprint TEXT NOT NULL,
      sid BLOB,
      counter INTEGER,
      accepted INTEGER NOT NULL
    )`);
  }

  /** A file path (kept across restarts) or ':memory:' (a restart forgets: every principal is mirrored afresh). */
  static open(file: string): DynsecStateStore {
    return new DynsecStateStore(file);
  }

  all(): Map<string, StoredCredential> {
    const rows = this.db.prepare('SELECT id, fingerprint, sid, counter, accepted FROM principals').all() as {
      id: string;
      fingerprint: string;
      sid: Buffer | null;
      counter: number | null;
      accepted: number;
    }[];
    const out = new Map<string, StoredCredential>();
    for (const r of rows) {
      out.set(r.id, {
        fingerprint: r.fingerprint,
        ...(r.sid && r.counter !== null ? { sid: new Uint8Array(r.sid), counter: r.counter } : {}),
        accepted: r.accepted === 1,
      });
    }
    return out;
  }

  put(id: string, c: StoredCredential): void {
    this.db
      .prepare('INSERT INTO principals (id, fingerprint, sid, counter, accepted) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint, sid = excluded.sid, counter = excluded.counter, accepted = excluded.accepted')
      .run(id, c.fingerprint, c.sid ? Buffer.from(c.sid) : null, c.counter ?? null, c.accepted ? 1 : 0);
  }

  delete(id: string): void {
    this.db.prepare('DELETE FROM principals WHERE id = ?').run(id);
  }

  close(): void {
    this.db.close();
  }
}
