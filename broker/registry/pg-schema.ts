/**
 * Versioned schema migrations of the PostgreSQL registry (the same tables as
 * broker/registry/schema.ts, in PostgreSQL's types: BIGINT for Unix-ms times
 * and counters, BYTEA for sealed secrets). Devices hold only K_auth | K_psk
 * (hs_sealed, the registry split of §14.2): there is no pre-split schema here. `mqsec_schema.version` records the
 * version reached; nodes starting at once migrate one after the other (an
 * advisory lock). Never edit a released step: append a new one.
 */
export const PG_MIGRATIONS: readonly string[] = [
  // 1: the SQLite registry's schema version 4, in one step
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
  INSERT INTO meta (key, value) VALUES ('revision', 0);
  CREATE TABLE master_check (id INTEGER PRIMARY KEY CHECK (id = 1), check_value BYTEA NOT NULL);
  CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE roles (
    name TEXT PRIMARY KEY,
    plaintext BOOLEAN NOT NULL DEFAULT FALSE,
    builtin BOOLEAN NOT NULL DEFAULT FALSE
  );
  CREATE TABLE rules (
    id BIGSERIAL UNIQUE,
    role TEXT NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
    action TEXT NOT NULL CHECK (action IN ('publish', 'subscribe')),
    filter TEXT NOT NULL,
    mode TEXT NOT NULL DEFAULT 'hop' CHECK (mode IN ('hop', 'e2e')),
    PRIMARY KEY (role, action, filter)
  );
  CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL REFERENCES roles(name),
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    key_version INTEGER NOT NULL,
    hs_sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
  );
  CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL REFERENCES roles(name),
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    salt BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE counters (
    device_id TEXT PRIMARY KEY,
    counter BIGINT NOT NULL
  );
  CREATE TABLE tickets (
    device_id TEXT NOT NULL,
    sid TEXT NOT NULL,
    record_sealed BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, sid)
  );
  CREATE INDEX tickets_expiry ON tickets (expires_at);
  CREATE TABLE audit (
    seq BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT,
    detail TEXT,
    source TEXT
  );
  CREATE INDEX audit_subject ON audit (subject, seq);
  CREATE TABLE grace (
    device_id TEXT PRIMARY KEY,
    until BIGINT NOT NULL,
    record_sealed BYTEA NOT NULL
  );
  `,
];
