/**
 * Versioned schema migrations for the registry. Each entry upgrades the
 * database from version i to i+1 inside one transaction; `PRAGMA
 * user_version` records the version reached. Never edit a released step:
 * append a new one.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: initial schema
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  INSERT INTO meta (key, value) VALUES ('revision', '0');
  CREATE TABLE roles (
    name TEXT PRIMARY KEY,
    plaintext INTEGER NOT NULL DEFAULT 0,
    builtin INTEGER NOT NULL DEFAULT 0
  );
  CREATE TABLE rules (
    role TEXT NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
    action TEXT NOT NULL CHECK (action IN ('publish', 'subscribe')),
    filter TEXT NOT NULL,
    PRIMARY KEY (role, action, filter)
  );
  CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL REFERENCES roles(name),
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    key_version INTEGER NOT NULL,
    key_sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );
  CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL REFERENCES roles(name),
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    created_at INTEGER NOT NULL
  );
  -- phase-2 state (firmware/secure TicketStore): the highest device counter
  -- ever accepted, and resumption tickets sealed with the master key
  CREATE TABLE counters (
    device_id TEXT PRIMARY KEY,
    counter INTEGER NOT NULL
  );
  CREATE TABLE tickets (
    device_id TEXT NOT NULL,
    sid TEXT NOT NULL,
    record_sealed BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (device_id, sid)
  );
  CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT,
    detail TEXT,
    source TEXT
  );
  `,
  // 2: QoS 1 grace state kept across a graceful restart (docs/protocol.md §8.5), sealed under the master key
  `
  CREATE TABLE grace (
    device_id TEXT PRIMARY KEY,
    until INTEGER NOT NULL,
    record_sealed BLOB NOT NULL
  );
  `,
  // 3: protection mode per rule (docs/protocol.md §14): 'hop' (sealed hop by hop, the default) or 'e2e' (group keys)
  `
  ALTER TABLE rules ADD COLUMN mode TEXT NOT NULL DEFAULT 'hop' CHECK (mode IN ('hop', 'e2e'));
  `,
  // 4: the registry split (docs/protocol.md §14.2): the broker keeps K_auth | K_psk (hs_sealed); the
  // principal key K leaves the registry (key_sealed emptied once its K_ks is in the key service's store)
  `
  ALTER TABLE devices ADD COLUMN hs_sealed BLOB;
  `,
];
