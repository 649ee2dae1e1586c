/**
 * The registry on PostgreSQL (npm `pg`), for several broker nodes sharing one
 * registry (docs/operations.md "Scaling"). Same state and behaviour as the
 * SQLite registry (test/broker/registry-store.ts runs one suite against both):
 *
 * - Every admin change is one transaction that raises `meta.revision` and
 *   sends `NOTIFY mqsec_registry`; PostgreSQL delivers it at commit to every
 *   node LISTENing, so a revocation reaches all nodes' sessions in
 *   milliseconds (`watch`), with the revision poll as a slow safety net.
 * - The phase-2 counter compare-and-set is one INSERT .. ON CONFLICT DO UPDATE
 *   .. WHERE statement: PostgreSQL locks the row and re-checks the condition
 *   against the latest committed value, so of several nodes accepting the
 *   same counter exactly one succeeds.
 * - Secrets are sealed under the master key of the node's data directory
 *   before they leave the process; a check value in `meta` refuses a node
 *   whose master.key differs from the one the database was made with.
 * - A lost or refused connection surfaces as RegistryUnavailableError
 *   (CONNACK 3 for new logins); the pool reconnects by itself.
 */
import pg from 'pg';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { MemberKeySink } from '../keyservice/store.js';
import { BUILTIN_ROLES, type Action, type ProtectionMode, type Role } from '../policy/policy.js';
import { checkAccountArgs, checkDeviceId, checkRoleName, checkRuleArgs, rolesFrom, type RuleRow } from './checks.js';
import { MemberKeys, META_KEY_SERVICE, openHandshake, provisionKey, type KeyServiceMode } from './provisioning.js';
import { PG_MIGRATIONS } from './pg-schema.js';
import { hashPassword, loadOrCreateMasterKey, MASTER_KEY_FILE, openDeviceKey, sealDeviceKey, verifyPassword } from './secrets.js';
import {
  GROUP_ROTATE,
  RegistryError,
  RegistryUnavailableError,
  type AccountRecord,
  type AuditEntry,
  type AuditQuery,
  type DeviceActivity,
  type DeviceKeyStateRow,
  type DeviceRecord,
  type DeviceStatus,
  type GraceRow,
  type HandshakeKeys,
  type Registry,
} from './store.js';

export const NOTIFY_CHANNEL = 'mqsec_registry';
/** Serialises schema migrations of nodes starting at once (any constant; "mqsec" in ASCII). */
const MIGRATION_LOCK = 0x6d71736563;

export interface PgRegistryOptions {
  /** postgres://user:password@host:port/database */
  url: string;
  /** The node's data directory: master key (the same file on every node), TLS files, lock. */
  dataDir: string;
  now?: () => number;
  /** Connections in the pool (default 10). */
  poolSize?: number;
  /** How long to wait for a connection before answering unavailable (default 2000 ms). */
  connectTimeoutMs?: number;
  /** Where provisioning writes K_ks (§14.2): as RegistryOptions.memberKeys of the SQLite registry. */
  memberKeys?: MemberKeySink | null;
}

/** BIGINT (ms timestamps, counters, sequence numbers) as JS numbers: all stay far below 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === 20 ? (v: string) => Number(v) : (pg.types.getTypeParser as (o: number, f?: string) => unknown)(oid, format)) as never,
};

/** The connection pool of one PostgreSQL store (registry, key service store). */
export function openPool(url: string, max: number, connectTimeoutMs = 2000): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max, connectionTimeoutMillis: connectTimeoutMs, idleTimeoutMillis: 30_000, types });
  // an idle connection that dies (server restart) is dropped from the pool, not fatal
  pool.on('error', () => {});
  return pool;
}

/** What `migrateSchema` brings up to date: table names are constants of the caller, never input. */
export interface SchemaSpec {
  /** Transaction-scoped advisory lock: one process migrates at a time. */
  lock: number;
  /** One-row table holding the schema version. */
  versionTable: string;
  migrations: readonly string[];
  /** "registry schema", "key service schema": for the refusal of a newer one. */
  what: string;
  /** Runs after migration i was applied (seeding). */
  applied?(i: number): Promise<void>;
  /** The data directory's key must be the one the database was made with (its HMAC over `label` in `table`, row id 1). */
  keyCheck: { table: string; key: Uint8Array; label: string; mismatch: string };
}

/** Inside the caller's transaction: takes the lock, applies the missing migrations, checks the key. */
export async function migrateSchema(c: Pick<pg.ClientBase, 'query'>, spec: SchemaSpec): Promise<void> {
  await c.query('SELECT pg_advisory_xact_lock($1)', [spec.lock]);
  await c.query(`CREATE TABLE IF NOT EXISTS ${spec.versionTable} (version INTEGER NOT NULL)`);
  const row = (await c.query<{ version: number }>(`SELECT version FROM ${spec.versionTable}`)).rows[0];
  let current = row?.version ?? 0;
  if (!row) await c.query(`INSERT INTO ${spec.versionTable} (version) VALUES (0)`);
  if (current > spec.migrations.length) throw new RegistryError(`${spec.what} version ${current} is newer than this mqsec (${spec.migrations.length})`);
  for (; current < spec.migrations.length; current++) {
    await c.query(spec.migrations[current]!);
    await spec.applied?.(current);
    await c.query(`UPDATE ${spec.versionTable} SET version = $1`, [current + 1]);
  }
  const { table, key, label, mismatch } = spec.keyCheck;
  const check = createHmac('sha256', key).update(label).digest();
  const stored = (await c.query<{ check_value: Buffer }>(`SELECT check_value FROM ${table} WHERE id = 1`)).rows[0];
  if (!stored) await c.query(`INSERT INTO ${table} (id, check_value) VALUES (1, $1)`, [check]);
  else if (stored.check_value.length !== check.length || !timingSafeEqual(stored.check_value, check)) throw new RegistryError(mismatch);
}

/** Errors that mean "the database is not reachable now", not "the request is wrong". */
export function isUnavailable(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  if (typeof err?.code === 'string') {
    // 08: connection exception, 57P: operator intervention (shutdown, cannot connect now), 53300: too many connections
    if (err.code.startsWith('08') || err.code.startsWith('57P') || err.code === '53300') return true;
    if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'].includes(err.code)) return true;
  }
  const m = err?.message ?? '';
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|connection timeout|Connection ended|not queryable/i.test(m);
}

function unavailable(e: unknown): never {
  if (e instanceof RegistryError || e instanceof RegistryUnavailableError) throw e;
  if (isUnavailable(e)) throw new RegistryUnavailableError((e as Error).message || String((e as { code?: string }).code));
  throw e;
}

/** The URL with its password blanked, for logs and errors. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

type Q = Pick<pg.PoolClient, 'query'>;

interface DeviceRow {
  id: string;
  role: string;
  status: DeviceStatus;
  key_version: number;
  hs_sealed: Buffer;
  created_at: number;
  updated_at: number;
}

function toDevice(r: DeviceRow): DeviceRecord {
  return { id: r.id, role: r.role, status: r.status, keyVersion: r.key_version, createdAt: r.created_at, updatedAt: r.updated_at };
}

export class PgRegistry implements Registry {
  readonly backend = 'postgres' as const;
  readonly dataDir: string;
  readonly location: string;
  private readonly pool: pg.Pool;
  private readonly master: Buffer;
  private readonly now: () => number;
  private readonly url: string;
  private readonly memberKeys: MemberKeys;
  private listener: PgListener | undefined;
  private readonly watchers = new Set<() => void>();
  private closed = false;

  /**
   * Connects, checks the master key against the database's and migrates the
   * schema. A bad URL or an unreachable database is refused here, with a
   * one-line message (RegistryError / RegistryUnavailableError).
   */
  static async open(opts: PgRegistryOptions): Promise<PgRegistry> {
    let parsed: URL;
    try {
      parsed = new URL(opts.url);
    } catch {
      throw new RegistryError(`not a PostgreSQL URL: ${redactUrl(opts.url)} (expected postgres://user@host:port/database)`);
    }
    if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
      throw new RegistryError(`not a PostgreSQL URL: ${redactUrl(opts.url)} (expected postgres://user@host:port/database)`);
    }
    const dir = resolve(opts.dataDir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const r = new PgRegistry(dir, opts);
    try {
      await r.migrate();
    } catch (e) {
      await r.close();
      if (e instanceof RegistryUnavailableError) throw new RegistryUnavailableError(`cannot reach ${r.location}: ${e.reason}`);
      if (e instanceof RegistryError) throw e;
      if (isUnavailable(e)) throw new RegistryUnavailableError(`cannot reach ${r.location}: ${(e as Error).message}`);
      throw new RegistryError(`PostgreSQL registry at ${r.location}: ${(e as Error).message}`);
    }
    return r;
  }

  private constructor(dir: string, opts: PgRegistryOptions) {
    this.dataDir = dir;
    this.url = opts.url;
    this.location = redactUrl(opts.url);
    this.now = opts.now ?? Date.now;
    this.master = loadOrCreateMasterKey(join(dir, MASTER_KEY_FILE));
    this.memberKeys = new MemberKeys(opts.memberKeys, dir);
    this.pool = openPool(opts.url, opts.poolSize ?? 10, opts.connectTimeoutMs);
  }

  private async q<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(sql, params);
    } catch (e) {
      return unavailable(e);
    }
  }

  /** Runs `body` in one transaction on one connection (committed when it returns, rolled back if it throws). */
  private async tx<T>(body: (c: Q) => Promise<T>): Promise<T> {
    let c: pg.PoolClient;
    try {
      c = await this.pool.connect();
    } catch (e) {
      unavailable(e);
    }
    let broken: unknown;
    try {
      await c.query('BEGIN');
      const out = await body(c);
      await c.query('COMMIT');
      return out;
    } catch (e) {
      if (isUnavailable(e)) broken = e;
      else await c.query('ROLLBACK').catch((re: unknown) => (broken = re));
      return unavailable(e);
    } finally {
      c.release(broken instanceof Error ? broken : broken ? new Error(String(broken)) : undefined);
    }
  }

  private async migrate(): Promise<void> {
    await this.tx((c) =>
      migrateSchema(c, {
        lock: MIGRATION_LOCK,
        versionTable: 'mqsec_schema',
        migrations: PG_MIGRATIONS,
        what: 'registry schema',
        applied: (i) => (i === 0 ? this.seed(c) : Promise.resolve()),
        // the master key check value: every node must open the same sealed keys
        keyCheck: {
          table: 'master_check',
          key: this.master,
          label: 'mqsec master key check',
          mismatch: `the master key in ${join(this.dataDir, MASTER_KEY_FILE)} is not the one this database was made with: copy the first node's master.key to every node`,
        },
      }),
    );
  }

  private async seed(c: Q): Promise<void> {
    for (const r of BUILTIN_ROLES) {
      await c.query('INSERT INTO roles (name, plaintext, builtin) VALUES ($1, $2, TRUE)', [r.name, r.plaintext === true]);
      for (const rule of r.rules) await c.query('INSERT INTO rules (role, action, filter) VALUES ($1, $2, $3)', [r.name, rule.action, rule.filter]);
    }
  }

  async schemaVersion(): Promise<number> {
    return (await this.q<{ version: number }>('SELECT version FROM mqsec_schema')).rows[0]!.version;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.master.fill(0);
    this.memberKeys.close();
    this.watchers.clear();
    await this.listener?.close();
    await this.pool.end().catch(() => {});
  }

  // ---- revision and change notification -----------------------------------

  async revision(): Promise<number> {
    return (await this.q<{ value: number }>("SELECT value FROM meta WHERE key = 'revision'")).rows[0]!.value;
  }

  /** Raises the revision and notifies every listening node, both at commit. */
  private async bump(c: Q): Promise<void> {
    const r = await c.query<{ value: number }>("UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value");
    await c.query('SELECT pg_notify($1, $2)', [NOTIFY_CHANNEL, String(r.rows[0]!.value)]);
  }

  watch(listener: () => void): () => void {
    this.watchers.add(listener);
    this.listener ??= new PgListener(this.url, NOTIFY_CHANNEL, () => {
      for (const w of [...this.watchers]) w();
    });
    return () => void this.watchers.delete(listener);
  }

  private async mode(c: Q): Promise<KeyServiceMode> {
    const r = (await c.query<{ value: string }>('SELECT value FROM settings WHERE key = $1', [META_KEY_SERVICE])).rows[0];
    return r?.value === 'external' ? 'external' : 'embedded';
  }

  async keyServiceMode(): Promise<KeyServiceMode> {
    return this.mode(this.pool as unknown as Q).catch(unavailable);
  }

  async setKeyServiceMode(mode: KeyServiceMode): Promise<void> {
    await this.q('INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value', [META_KEY_SERVICE, mode]);
  }

  // ---- roles and rules --------------------------------------------------

  async listRoles(): Promise<Role[]> {
    // one statement: roles and rules from the same snapshot
    const rows = (await this.q<{ name: string; plaintext: boolean } & Partial<RuleRow>>(
      'SELECT r.name, r.plaintext, x.action, x.filter, x.mode FROM roles r LEFT JOIN rules x ON x.role = r.name ORDER BY r.name, x.id',
    )).rows;
    const roles = [...new Map(rows.map((r) => [r.name, { name: r.name, plaintext: r.plaintext }])).values()];
    const rules = rows.filter((r) => r.action !== null && r.action !== undefined).map((r) => ({ role: r.name, action: r.action!, filter: r.filter!, mode: r.mode! }));
    return rolesFrom(roles, rules);
  }

  async getRole(name: string): Promise<Role | undefined> {
    return (await this.listRoles()).find((r) => r.name === name);
  }

  private async roleExists(c: Q, name: string): Promise<boolean> {
    return (await c.query('SELECT 1 FROM roles WHERE name = $1', [name])).rowCount === 1;
  }

  async addRole(name: string, opts: { plaintext?: boolean } = {}): Promise<void> {
    checkRoleName(name);
    await this.tx(async (c) => {
      const r = await c.query('INSERT INTO roles (name, plaintext) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [name, opts.plaintext === true]);
      if (r.rowCount === 0) throw new RegistryError(`role "${name}" already exists`);
      await this.auditRow(c, 'role.add', name, opts.plaintext ? 'plaintext' : null, 'admin');
      await this.bump(c);
    });
  }

  async addRule(role: string, action: Action, filter: string, mode: ProtectionMode = 'hop'): Promise<void> {
    checkRuleArgs(action, filter, mode);
    await this.tx(async (c) => {
      if (!(await this.roleExists(c, role))) throw new RegistryError(`unknown role "${role}"`);
      await c.query(
        'INSERT INTO rules (role, action, filter, mode) VALUES ($1, $2, $3, $4) ON CONFLICT (role, action, filter) DO UPDATE SET mode = EXCLUDED.mode',
        [role, action, filter, mode],
      );
      await this.auditRow(c, 'acl.add', role, `allow ${action} ${filter}${mode === 'e2e' ? ' (e2e)' : ''}`, 'admin');
      await this.bump(c);
    });
  }

  async removeRule(role: string, action: Action, filter: string): Promise<boolean> {
    return this.tx(async (c) => {
      const r = await c.query('DELETE FROM rules WHERE role = $1 AND action = $2 AND filter = $3', [role, action, filter]);
      if (r.rowCount === 0) return false;
      await this.auditRow(c, 'acl.remove', role, `allow ${action} ${filter}`, 'admin');
      await this.bump(c);
      return true;
    });
  }

  async rotateGroup(filter: string): Promise<void> {
    await this.tx(async (c) => {
      await this.auditRow(c, GROUP_ROTATE, filter, null, 'admin');
      await this.bump(c);
    });
  }

  // ---- devices ------------------------------------------------------------

  private async requireFreeName(c: Q, id: string): Promise<void> {
    if ((await c.query('SELECT 1 FROM devices WHERE id = $1', [id])).rowCount) throw new RegistryError(`device "${id}" already exists`);
    if ((await c.query('SELECT 1 FROM accounts WHERE name = $1', [id])).rowCount) throw new RegistryError(`"${id}" is already an account name`);
  }

  private async deviceRow(c: Q, id: string, lock = false): Promise<DeviceRow | undefined> {
    return (await c.query<DeviceRow>(`SELECT * FROM devices WHERE id = $1${lock ? ' FOR UPDATE' : ''}`, [id])).rows[0];
  }

  async addDevice(id: string, role: string): Promise<{ device: DeviceRecord; key: Uint8Array }> {
    checkDeviceId(id);
    let key!: Uint8Array;
    const device = await this.tx(async (c) => {
      // device ids and account names share one namespace: serialise additions
      await c.query('LOCK TABLE devices, accounts IN SHARE ROW EXCLUSIVE MODE');
      if (!(await this.roleExists(c, role))) throw new RegistryError(`unknown role "${role}"`);
      await this.requireFreeName(c, id);
      const t = this.now();
      // K_ks is written first: if that fails, nothing is registered
      const p = await provisionKey(this.master, this.memberKeys.sink(await this.mode(c)), id, t, 1);
      key = p.key;
      const r = await c.query<DeviceRow>(
        'INSERT INTO devices (id, role, status, key_version, hs_sealed, created_at, updated_at) VALUES ($1, $2, $3, 1, $4, $5, $5) RETURNING *',
        [id, role, 'active', p.hsSealed, t],
      );
      await this.auditRow(c, 'device.add', id, `role=${role}`, 'admin');
      await this.bump(c);
      return toDevice(r.rows[0]!);
    });
    return { device, key };
  }

  async getDevice(id: string): Promise<DeviceRecord | undefined> {
    const r = (await this.q<DeviceRow>('SELECT * FROM devices WHERE id = $1', [id])).rows[0];
    return r && toDevice(r);
  }

  async listDevices(): Promise<DeviceRecord[]> {
    return (await this.q<DeviceRow>('SELECT * FROM devices ORDER BY id')).rows.map(toDevice);
  }

  async deviceKeyStates(): Promise<Map<string, DeviceKeyStateRow>> {
    const rows = (await this.q<{ id: string; status: DeviceStatus; key_version: number; created_at: number }>('SELECT id, status, key_version, created_at FROM devices')).rows;
    return new Map(rows.map((r) => [r.id, { status: r.status, keyVersion: r.key_version, createdAt: r.created_at }]));
  }

  async handshakeKeys(id: string): Promise<HandshakeKeys | undefined> {
    const r = (await this.q<DeviceRow>('SELECT * FROM devices WHERE id = $1', [id])).rows[0];
    if (!r || r.status !== 'active') return undefined;
    return openHandshake(this.master, r.id, r.key_version, r.hs_sealed);
  }

  async revokeDevice(id: string): Promise<DeviceRecord> {
    let mode: KeyServiceMode = 'embedded';
    const device = await this.tx(async (c) => {
      if (!(await this.deviceRow(c, id, true))) throw new RegistryError(`unknown device "${id}"`);
      const r = await c.query<DeviceRow>("UPDATE devices SET status = 'revoked', updated_at = $1 WHERE id = $2 RETURNING *", [this.now(), id]);
      mode = await this.mode(c);
      await c.query('DELETE FROM tickets WHERE device_id = $1', [id]);
      // grace keys written at a graceful stop (§8.5) die with the device's keys
      await c.query('DELETE FROM grace WHERE device_id = $1', [id]);
      await this.auditRow(c, 'device.revoke', id, null, 'admin');
      await this.bump(c);
      return toDevice(r.rows[0]!);
    });
    // a revoked principal comes back only with a new key (rotate): its K_ks is of no further use
    await this.memberKeys.forgetAfter(id, mode);
    return device;
  }

  async rotateDevice(id: string): Promise<{ device: DeviceRecord; key: Uint8Array }> {
    let key!: Uint8Array;
    const device = await this.tx(async (c) => {
      const row = await this.deviceRow(c, id, true);
      if (!row) throw new RegistryError(`unknown device "${id}"`);
      const v = row.key_version + 1;
      const p = await provisionKey(this.master, this.memberKeys.sink(await this.mode(c)), id, row.created_at, v);
      key = p.key;
      const r = await c.query<DeviceRow>(
        "UPDATE devices SET key_version = $1, hs_sealed = $2, status = 'active', updated_at = $3 WHERE id = $4 RETURNING *",
        [v, p.hsSealed, this.now(), id],
      );
      await c.query('DELETE FROM tickets WHERE device_id = $1', [id]);
      await c.query('DELETE FROM grace WHERE device_id = $1', [id]);
      // new key = re-provisioned device: its stored counter may start over
      await c.query('DELETE FROM counters WHERE device_id = $1', [id]);
      await this.auditRow(c, 'device.rotate', id, `key_version=${v}`, 'admin');
      await this.bump(c);
      return toDevice(r.rows[0]!);
    });
    return { device, key };
  }

  async removeDevice(id: string): Promise<void> {
    let mode: KeyServiceMode = 'embedded';
    await this.tx(async (c) => {
      if (!(await this.deviceRow(c, id, true))) throw new RegistryError(`unknown device "${id}"`);
      await c.query('DELETE FROM tickets WHERE device_id = $1', [id]);
      await c.query('DELETE FROM counters WHERE device_id = $1', [id]);
      await c.query('DELETE FROM grace WHERE device_id = $1', [id]);
      await c.query('DELETE FROM devices WHERE id = $1', [id]);
      mode = await this.mode(c);
      await this.auditRow(c, 'device.remove', id, null, 'admin');
      await this.bump(c);
    });
    await this.memberKeys.forgetAfter(id, mode);
  }

  // ---- accounts -----------------------------------------------------------

  async addAccount(name: string, role: string, password: string): Promise<AccountRecord> {
    checkAccountArgs(name, password);
    if (!(await this.getRole(role))) throw new RegistryError(`unknown role "${role}"`);
    const { salt, hash } = await hashPassword(password);
    return this.tx(async (c) => {
      await c.query('LOCK TABLE devices, accounts IN SHARE ROW EXCLUSIVE MODE');
      if (!(await this.roleExists(c, role))) throw new RegistryError(`unknown role "${role}"`);
      await this.requireFreeName(c, name);
      const r = await c.query<{ name: string; role: string; status: 'active' | 'disabled'; created_at: number }>(
        'INSERT INTO accounts (name, role, status, salt, hash, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING name, role, status, created_at',
        [name, role, 'active', salt, hash, this.now()],
      );
      await this.auditRow(c, 'account.add', name, `role=${role}`, 'admin');
      await this.bump(c);
      const a = r.rows[0]!;
      return { name: a.name, role: a.role, status: a.status, createdAt: a.created_at };
    });
  }

  async getAccount(name: string): Promise<AccountRecord | undefined> {
    const r = (await this.q<{ name: string; role: string; status: 'active' | 'disabled'; created_at: number }>(
      'SELECT name, role, status, created_at FROM accounts WHERE name = $1',
      [name],
    )).rows[0];
    return r && { name: r.name, role: r.role, status: r.status, createdAt: r.created_at };
  }

  async listAccounts(): Promise<AccountRecord[]> {
    const rows = (await this.q<{ name: string; role: string; status: 'active' | 'disabled'; created_at: number }>(
      'SELECT name, role, status, created_at FROM accounts ORDER BY name',
    )).rows;
    return rows.map((r) => ({ name: r.name, role: r.role, status: r.status, createdAt: r.created_at }));
  }

  async setAccountStatus(name: string, status: 'active' | 'disabled'): Promise<void> {
    await this.tx(async (c) => {
      const r = await c.query('UPDATE accounts SET status = $1 WHERE name = $2', [status, name]);
      if (r.rowCount === 0) throw new RegistryError(`unknown account "${name}"`);
      await this.auditRow(c, status === 'active' ? 'account.enable' : 'account.disable', name, null, 'admin');
      await this.bump(c);
    });
  }

  async removeAccount(name: string): Promise<void> {
    await this.tx(async (c) => {
      const r = await c.query('DELETE FROM accounts WHERE name = $1', [name]);
      if (r.rowCount === 0) throw new RegistryError(`unknown account "${name}"`);
      await this.auditRow(c, 'account.remove', name, null, 'admin');
      await this.bump(c);
    });
  }

  async verifyAccount(name: string, password: string): Promise<AccountRecord | undefined> {
    const r = (await this.q<{ salt: Buffer; hash: Buffer; status: string }>('SELECT salt, hash, status FROM accounts WHERE name = $1', [name])).rows[0];
    const ok = await verifyPassword(password, r ? { salt: r.salt, hash: r.hash } : undefined);
    if (!ok || r?.status !== 'active') return undefined;
    return this.getAccount(name);
  }

  // ---- phase-2 state --------------------------------------------------------

  async getCounter(deviceId: string): Promise<number> {
    const r = (await this.q<{ counter: number }>('SELECT counter FROM counters WHERE device_id = $1', [deviceId])).rows[0];
    return r ? r.counter : -1;
  }

  async advanceCounter(deviceId: string, value: number): Promise<boolean> {
    // One statement: a concurrent insert or update of the same row waits for the
    // other's commit, then re-checks the WHERE against the committed counter.
    const r = await this.q(
      `INSERT INTO counters (device_id, counter) VALUES ($1, $2)
       ON CONFLICT (device_id) DO UPDATE SET counter = EXCLUDED.counter WHERE EXCLUDED.counter > counters.counter`,
      [deviceId, value],
    );
    return r.rowCount === 1;
  }

  async putTicketRow(deviceId: string, sid: string, record: Uint8Array, expiresAt: number): Promise<void> {
    await this.q(
      `INSERT INTO tickets (device_id, sid, record_sealed, expires_at, updated_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (device_id, sid) DO UPDATE SET record_sealed = EXCLUDED.record_sealed,
         expires_at = EXCLUDED.expires_at, updated_at = EXCLUDED.updated_at`,
      [deviceId, sid, Buffer.from(record), expiresAt, this.now()],
    );
  }

  async getTicketRow(deviceId: string, sid: string): Promise<{ record: Uint8Array; expiresAt: number } | undefined> {
    const r = (await this.q<{ record_sealed: Buffer; expires_at: number }>('SELECT record_sealed, expires_at FROM tickets WHERE device_id = $1 AND sid = $2', [deviceId, sid])).rows[0];
    return r && { record: new Uint8Array(r.record_sealed), expiresAt: r.expires_at };
  }

  async deleteTicketRow(deviceId: string, sid: string): Promise<void> {
    await this.q('DELETE FROM tickets WHERE device_id = $1 AND sid = $2', [deviceId, sid]);
  }

  async deleteTicketsOf(deviceId: string): Promise<void> {
    await this.q('DELETE FROM tickets WHERE device_id = $1', [deviceId]);
  }

  async resetCounter(deviceId: string): Promise<void> {
    await this.q('DELETE FROM counters WHERE device_id = $1', [deviceId]);
  }

  async ticketCount(deviceId?: string): Promise<number> {
    const r = deviceId
      ? await this.q<{ n: number }>('SELECT COUNT(*) AS n FROM tickets WHERE device_id = $1', [deviceId])
      : await this.q<{ n: number }>('SELECT COUNT(*) AS n FROM tickets');
    return r.rows[0]!.n;
  }

  async deviceActivity(): Promise<Map<string, DeviceActivity>> {
    const out = new Map<string, DeviceActivity>();
    const rows = (await this.q<{ device_id: string; n: number; last: number; expires: number }>(
      'SELECT device_id, COUNT(*) AS n, MAX(updated_at) AS last, MAX(expires_at) AS expires FROM tickets GROUP BY device_id',
    )).rows;
    for (const r of rows) out.set(r.device_id, { tickets: r.n, lastTicketAt: r.last, ticketExpiresAt: r.expires, counter: -1 });
    for (const r of (await this.q<{ device_id: string; counter: number }>('SELECT device_id, counter FROM counters')).rows) {
      const a = out.get(r.device_id);
      if (a) a.counter = r.counter;
      else out.set(r.device_id, { tickets: 0, lastTicketAt: null, ticketExpiresAt: null, counter: r.counter });
    }
    return out;
  }

  async purgeExpiredTickets(): Promise<number> {
    return (await this.q('DELETE FROM tickets WHERE expires_at <= $1', [this.now()])).rowCount ?? 0;
  }

  // ---- grace state (§8.5) ------------------------------------------------------

  async saveGrace(records: GraceRow[]): Promise<void> {
    await this.tx(async (c) => {
      for (const r of records) {
        await c.query(
          'INSERT INTO grace (device_id, until, record_sealed) VALUES ($1, $2, $3) ON CONFLICT (device_id) DO UPDATE SET until = EXCLUDED.until, record_sealed = EXCLUDED.record_sealed',
          [r.devId, r.until, Buffer.from(r.sealed)],
        );
      }
    });
  }

  async takeGrace(now: number): Promise<GraceRow[]> {
    return this.tx(async (c) => {
      // DELETE .. RETURNING: two nodes starting at once never both take one record
      const rows = (await c.query<{ device_id: string; until: number; record_sealed: Buffer }>('DELETE FROM grace RETURNING device_id, until, record_sealed')).rows;
      return rows.filter((r) => r.until > now).map((r) => ({ devId: r.device_id, until: r.until, sealed: new Uint8Array(r.record_sealed) }));
    });
  }

  sealSecret(label: string, data: Uint8Array): Uint8Array {
    return new Uint8Array(sealDeviceKey(this.master, label, 0, data));
  }

  openSecret(label: string, sealed: Uint8Array): Uint8Array {
    return openDeviceKey(this.master, label, 0, Buffer.from(sealed));
  }

  // ---- audit ----------------------------------------------------------------

  private async auditRow(c: Q, kind: string, subject: string | null, detail: string | null, source: string | null): Promise<void> {
    await c.query('INSERT INTO audit (at, kind, subject, detail, source) VALUES ($1, $2, $3, $4, $5)', [this.now(), kind, subject, detail, source]);
  }

  async audit(kind: string, subject: string | null, detail: string | null = null, source: string | null = null): Promise<void> {
    await this.auditRow(this.pool as unknown as Q, kind, subject, detail, source).catch(unavailable);
  }

  async listAudit(opts: AuditQuery = {}): Promise<AuditEntry[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (cond: string, v: unknown) => {
      args.push(v);
      where.push(cond.replace('?', `$${args.length}`));
    };
    if (opts.afterSeq !== undefined) add('seq > ?', opts.afterSeq);
    if (opts.source) add('source = ?', opts.source);
    if (opts.kind) add('kind = ?', opts.kind);
    if (opts.subject) add('subject = ?', opts.subject);
    args.push(opts.limit ?? 100);
    const sql = `SELECT seq, at, kind, subject, detail, source FROM audit ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY seq DESC LIMIT $${args.length}`;
    return (await this.q<AuditEntry>(sql, args)).rows;
  }
}

/**
 * One dedicated connection LISTENing on the registry channel. When it is lost
 * (database restarted) it reconnects every `retryMs`, and fires `onNotify`
 * once connected again: changes committed meanwhile were not notified.
 */
class PgListener {
  private client: pg.Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private everConnected = false;

  constructor(
    private readonly url: string,
    private readonly channel: string,
    private readonly onNotify: () => void,
    private readonly retryMs = 500,
  ) {
    void this.connect();
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const c = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 2000, types });
    this.client = c;
    const retry = () => {
      if (this.closed || this.client !== c) return;
      this.client = undefined;
      c.removeAllListeners('notification');
      c.end().catch(() => {});
      this.timer = setTimeout(() => void this.connect(), this.retryMs);
      this.timer.unref();
    };
    c.on('error', retry);
    c.on('end', retry);
    c.on('notification', (n) => {
      if (n.channel === this.channel) this.onNotify();
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${this.channel}`);
    } catch {
      retry();
      return;
    }
    if (this.closed) return void c.end().catch(() => {});
    if (this.everConnected) this.onNotify(); // reconnected: catch up on what was missed
    this.everConnected = true;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    const c = this.client;
    this.client = undefined;
    if (c) {
      c.removeAllListeners();
      c.on('error', () => {});
      await c.end().catch(() => {});
    }
  }
}
