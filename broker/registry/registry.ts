/**
 * The registry on SQLite (better-sqlite3, WAL mode): the default for one
 * broker node (the storage interface and the PostgreSQL implementation for
 * several nodes: broker/registry/store.ts, pg-registry.ts).
 *
 * Every admin mutation bumps `meta.revision` in the same transaction; a
 * running broker polls that one row (cheap) and reloads roles and re-checks
 * live sessions when it changes. That is how `mqsec device revoke`, run as a
 * separate process, reaches a running broker without an admin channel.
 *
 * Principal keys are split at provisioning (docs/protocol.md §14.2,
 * provisioning.ts): the registry keeps K_auth | K_psk sealed under the
 * master key, K_ks goes to the key service's store (a `MemberKeySink`), and K
 * is returned to the caller once and never stored. Registries from before
 * the split are split when opened (schema 4).
 *
 * better-sqlite3 is synchronous: each method does its work at once and
 * returns a settled promise (the interface is async for the network
 * backend). The phase-2 writes (counters, tickets) go through the group
 * commit: the writes of one event-loop turn share one transaction.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BUILTIN_ROLES, type Action, type ProtectionMode, type Role } from '../policy/policy.js';
import { checkAccountArgs, checkDeviceId, checkRoleName, checkRuleArgs, rolesFrom, type RuleRow } from './checks.js';
import type { MemberKeySink } from '../keyservice/store.js';
import { splitPrincipalKey } from './principal-keys.js';
import { MemberKeys, META_KEY_SERVICE, openHandshake, provisionKey, sealHandshake, type KeyServiceMode } from './provisioning.js';
import { GroupCommit } from './group-commit.js';
import { MIGRATIONS } from './schema.js';
import {
  hashPassword,
  loadOrCreateMasterKey,
  MASTER_KEY_FILE,
  openDeviceKey,
  sealDeviceKey,
  verifyPassword,
} from './secrets.js';
import {
  GROUP_ROTATE,
  RegistryError,
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

export {
  GROUP_ROTATE,
  RegistryError,
  RegistryUnavailableError,
  type AccountRecord,
  type AuditEntry,
  type DeviceActivity,
  type DeviceRecord,
  type DeviceStatus,
  type HandshakeKeys,
  type Registry,
} from './store.js';
export { DEVICE_KEY_LENGTH } from './checks.js';

export const DB_FILE = 'registry.db';

export interface RegistryOptions {
  /** Wall clock in ms (tests inject one). */
  now?: () => number;
  /**
   * Where provisioning writes each principal's K_ks (docs/protocol.md §14.2).
   * Omitted: the embedded key service's store in the same data directory,
   * opened on first use (refused once a broker of this registry runs with an
   * external key service: its K_ks must go to that service's directory).
   * null: none (a broker with an external key service: it never opens that
   * store, and provisioning through it is refused).
   */
  memberKeys?: MemberKeySink | null;
}

interface DeviceRow {
  id: string;
  role: string;
  status: DeviceStatus;
  key_version: number;
  key_sealed: Buffer;
  hs_sealed: Buffer | null;
  created_at: number;
  updated_at: number;
}

export class SqliteRegistry implements Registry {
  readonly backend = 'sqlite' as const;
  readonly dataDir: string;
  readonly location: string;
  private readonly db: Database.Database;
  private readonly master: Buffer;
  private readonly now: () => number;
  /**
   * Prepared statements by SQL text. Compiling the SQL on every call was about
   * a tenth of the broker's CPU during reconnect storms, so each statement is
   * prepared once per open registry (only get/all/run are used, never a
   * statement held open by an iterator, so sharing one is safe).
   */
  private readonly statements = new Map<string, Database.Statement>();
  /** Batches the phase-2 writes of one event-loop turn into one transaction; each resolves after the commit. */
  readonly commits: GroupCommit;
  private readonly memberKeys: MemberKeys;
  /** Principal keys split by this open (schema 4 migration of a registry from before the split). */
  splitAtOpen = 0;

  /** Opens (creating on first use) the registry in `dataDir`. */
  static open(dataDir: string, opts: RegistryOptions = {}): SqliteRegistry {
    const dir = resolve(dataDir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return new SqliteRegistry(dir, opts);
  }

  private constructor(dir: string, opts: RegistryOptions) {
    this.dataDir = dir;
    this.location = join(dir, DB_FILE);
    this.now = opts.now ?? Date.now;
    this.master = loadOrCreateMasterKey(join(dir, MASTER_KEY_FILE));
    this.db = new Database(join(dir, DB_FILE));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    // overwritten or deleted key material is zeroed in the file, not left in free pages
    this.db.pragma('secure_delete = ON');
    this.memberKeys = new MemberKeys(opts.memberKeys, dir);
    this.commits = new GroupCommit((body) => this.db.transaction(body).immediate());
    try {
      this.migrate();
      if (this.legacyKeyCount() > 0) {
        if (opts.memberKeys === null) {
          throw new RegistryError(
            `the registry in ${dir} still holds principal keys from before the key split: run \`mqsec keyservice migrate --from ${dir} --data <key service dir>\` first`,
          );
        }
        this.splitLegacyKeys();
      }
    } catch (e) {
      this.shut();
      throw e;
    }
  }

  private mode(): KeyServiceMode {
    const r = this.stmt('SELECT value FROM meta WHERE key = ?').get(META_KEY_SERVICE) as { value: string } | undefined;
    return r?.value === 'external' ? 'external' : 'embedded';
  }

  async keyServiceMode(): Promise<KeyServiceMode> {
    return this.mode();
  }

  async setKeyServiceMode(mode: KeyServiceMode): Promise<void> {
    this.stmt('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(META_KEY_SERVICE, mode);
  }

  private legacyKeyCount(): number {
    return (this.stmt('SELECT COUNT(*) AS n FROM devices WHERE length(key_sealed) > 0').get() as { n: number }).n;
  }

  /**
   * Schema 4 migration: every principal whose K is still stored gets K_auth |
   * K_psk here and K_ks in the key service's store, then K is erased (the file
   * rebuilt and the WAL truncated, so no page image keeps it).
   */
  private splitLegacyKeys(): void {
    const sink = this.memberKeys.syncSink(this.mode());
    const rows = this.stmt('SELECT * FROM devices WHERE length(key_sealed) > 0').all() as DeviceRow[];
    this.db.transaction(() => {
      for (const r of rows) {
        const key = openDeviceKey(this.master, r.id, r.key_version, r.key_sealed);
        const split = splitPrincipalKey(key, r.id);
        key.fill(0);
        if (r.status === 'active') sink.putMemberKeyNow(r.id, `${r.created_at}/${r.key_version}`, split.keyService);
        this.stmt("UPDATE devices SET hs_sealed = ?, key_sealed = X'' WHERE id = ?").run(sealHandshake(this.master, r.id, r.key_version, split.handshake), r.id);
        split.handshake.fill(0);
        split.keyService.fill(0);
      }
      this.auditRow('registry.key-split', null, `${rows.length} principal keys split (K_ks to the key service)`, 'admin');
    }).immediate();
    this.splitAtOpen = rows.length;
    // old copies of the sealed K may sit in free pages from before secure_delete was on:
    // rebuild the file, then empty the WAL, so none survives on disk
    this.db.exec('VACUUM');
    this.db.pragma('wal_checkpoint(TRUNCATE)');
  }

  private stmt(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  private migrate(): void {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    if (current > MIGRATIONS.length) {
      throw new RegistryError(`registry schema version ${current} is newer than this mqsec (${MIGRATIONS.length})`);
    }
    for (let v = current; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]!);
        if (v === 0) this.seedBuiltinRoles();
        this.db.pragma(`user_version = ${v + 1}`);
      }).immediate();
    }
  }

  private seedBuiltinRoles(): void {
    const addRole = this.db.prepare('INSERT INTO roles (name, plaintext, builtin) VALUES (?, ?, 1)');
    const addRule = this.db.prepare('INSERT INTO rules (role, action, filter) VALUES (?, ?, ?)');
    for (const r of BUILTIN_ROLES) {
      addRole.run(r.name, r.plaintext ? 1 : 0);
      for (const rule of r.rules) addRule.run(r.name, rule.action, rule.filter);
    }
  }

  /** One IMMEDIATE transaction (committed when `body` returns, rolled back if it throws). */
  private tx<T>(body: () => T): T {
    return this.db.transaction(body).immediate();
  }

  async schemaVersion(): Promise<number> {
    return this.db.pragma('user_version', { simple: true }) as number;
  }

  async close(): Promise<void> {
    if (!this.db.open) return;
    // writes still queued for the next group commit (a handshake cut off by a stop) go to disk first
    this.commits.flush();
    this.shut();
  }

  private shut(): void {
    this.memberKeys.close();
    this.master.fill(0);
    this.statements.clear();
    if (this.db.open) this.db.close();
  }

  // ---- revision ---------------------------------------------------------

  async revision(): Promise<number> {
    const row = this.stmt("SELECT value FROM meta WHERE key = 'revision'").get() as { value: string };
    return Number(row.value);
  }

  private bump(): void {
    this.stmt("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'").run();
  }

  // ---- roles and rules --------------------------------------------------

  private roles(): Role[] {
    const roles = this.stmt('SELECT name, plaintext FROM roles ORDER BY name').all() as { name: string; plaintext: number }[];
    const rules = this.stmt('SELECT role, action, filter, mode FROM rules ORDER BY rowid').all() as RuleRow[];
    return rolesFrom(roles.map((r) => ({ name: r.name, plaintext: r.plaintext === 1 })), rules);
  }

  private roleExists(name: string): boolean {
    return this.stmt('SELECT 1 FROM roles WHERE name = ?').get(name) !== undefined;
  }

  async listRoles(): Promise<Role[]> {
    return this.roles();
  }

  // Synchronous reads of the local file, for in-process consumers that cannot wait (the
  // stock brokers' key service answers a broker callback synchronously, broker/stock/).
  // The async interface above is the one every other caller uses.

  rolesNow(): Role[] {
    return this.roles();
  }

  devicesNow(): DeviceRecord[] {
    return (this.stmt('SELECT * FROM devices ORDER BY id').all() as DeviceRow[]).map(toDevice);
  }

  deviceNow(id: string): DeviceRecord | undefined {
    const r = this.deviceRow(id);
    return r && toDevice(r);
  }

  handshakeKeysNow(id: string): HandshakeKeys | undefined {
    const r = this.deviceRow(id);
    if (!r || r.status !== 'active' || !r.hs_sealed) return undefined;
    return openHandshake(this.master, r.id, r.key_version, r.hs_sealed);
  }

  async getRole(name: string): Promise<Role | undefined> {
    return this.roles().find((r) => r.name === name);
  }

  async addRole(name: string, opts: { plaintext?: boolean } = {}): Promise<void> {
    checkRoleName(name);
    this.tx(() => {
      if (this.roleExists(name)) throw new RegistryError(`role "${name}" already exists`);
      this.stmt('INSERT INTO roles (name, plaintext) VALUES (?, ?)').run(name, opts.plaintext ? 1 : 0);
      this.auditRow('role.add', name, opts.plaintext ? 'plaintext' : null, 'admin');
      this.bump();
    });
  }

  async addRule(role: string, action: Action, filter: string, mode: ProtectionMode = 'hop'): Promise<void> {
    checkRuleArgs(action, filter, mode);
    this.tx(() => {
      if (!this.roleExists(role)) throw new RegistryError(`unknown role "${role}"`);
      this.stmt('INSERT INTO rules (role, action, filter, mode) VALUES (?, ?, ?, ?) ON CONFLICT (role, action, filter) DO UPDATE SET mode = excluded.mode').run(
        role,
        action,
        filter,
        mode,
      );
      this.auditRow('acl.add', role, `allow ${action} ${filter}${mode === 'e2e' ? ' (e2e)' : ''}`, 'admin');
      this.bump();
    });
  }

  async removeRule(role: string, action: Action, filter: string): Promise<boolean> {
    return this.tx(() => {
      const r = this.stmt('DELETE FROM rules WHERE role = ? AND action = ? AND filter = ?').run(role, action, filter);
      if (r.changes === 0) return false;
      this.auditRow('acl.remove', role, `allow ${action} ${filter}`, 'admin');
      this.bump();
      return true;
    });
  }

  /**
   * Operator rotation of one end-to-end group (docs/protocol.md §14.3): an
   * audit row of kind `group.rotate`; a running broker hands it to the key
   * service at its next poll, which moves the group to a new epoch.
   */
  async rotateGroup(filter: string): Promise<void> {
    this.tx(() => {
      this.auditRow(GROUP_ROTATE, filter, null, 'admin');
      this.bump();
    });
  }

  // ---- devices ------------------------------------------------------------

  private requireFreeName(id: string): void {
    if (this.stmt('SELECT 1 FROM devices WHERE id = ?').get(id)) throw new RegistryError(`device "${id}" already exists`);
    if (this.stmt('SELECT 1 FROM accounts WHERE name = ?').get(id))
      throw new RegistryError(`"${id}" is already an account name`);
  }

  async addDevice(id: string, role: string): Promise<{ device: DeviceRecord; key: Uint8Array }> {
    checkDeviceId(id);
    if (!this.roleExists(role)) throw new RegistryError(`unknown role "${role}"`);
    this.requireFreeName(id);
    const t = this.now();
    // K_ks is written first (the key service's store may be asynchronous: before the
    // transaction): if that fails, nothing is registered. The checks run again inside.
    const p = await provisionKey(this.master, this.memberKeys.sink(this.mode()), id, t, 1);
    const key = p.key;
    this.tx(() => {
      if (!this.roleExists(role)) throw new RegistryError(`unknown role "${role}"`);
      this.requireFreeName(id);
      this.stmt(
          "INSERT INTO devices (id, role, status, key_version, key_sealed, hs_sealed, created_at, updated_at) VALUES (?, ?, ?, 1, X'', ?, ?, ?)",
        )
        .run(id, role, 'active', p.hsSealed, t, t);
      this.auditRow('device.add', id, `role=${role}`, 'admin');
      this.bump();
    });
    return { device: toDevice(this.deviceRow(id)!), key };
  }

  private deviceRow(id: string): DeviceRow | undefined {
    return this.stmt('SELECT * FROM devices WHERE id = ?').get(id) as DeviceRow | undefined;
  }

  async getDevice(id: string): Promise<DeviceRecord | undefined> {
    const r = this.deviceRow(id);
    return r && toDevice(r);
  }

  async listDevices(): Promise<DeviceRecord[]> {
    return (this.stmt('SELECT * FROM devices ORDER BY id').all() as DeviceRow[]).map(toDevice);
  }

  async deviceKeyStates(): Promise<Map<string, DeviceKeyStateRow>> {
    const rows = this.stmt('SELECT id, status, key_version, created_at FROM devices').all() as { id: string; status: DeviceStatus; key_version: number; created_at: number }[];
    return new Map(rows.map((r) => [r.id, { status: r.status, keyVersion: r.key_version, createdAt: r.created_at }]));
  }

  async handshakeKeys(id: string): Promise<HandshakeKeys | undefined> {
    const r = this.deviceRow(id);
    if (!r || r.status !== 'active' || !r.hs_sealed) return undefined;
    return openHandshake(this.master, r.id, r.key_version, r.hs_sealed);
  }

  async revokeDevice(id: string): Promise<DeviceRecord> {
    this.tx(() => {
      const r = this.deviceRow(id);
      if (!r) throw new RegistryError(`unknown device "${id}"`);
      this.stmt("UPDATE devices SET status = 'revoked', updated_at = ? WHERE id = ?").run(this.now(), id);
      this.stmt('DELETE FROM tickets WHERE device_id = ?').run(id);
      // grace keys written at a graceful stop (§8.5) die with the device's keys
      this.stmt('DELETE FROM grace WHERE device_id = ?').run(id);
      this.auditRow('device.revoke', id, null, 'admin');
      this.bump();
    });
    // a revoked principal comes back only with a new key (rotate): its K_ks is of no further use
    await this.memberKeys.forgetAfter(id, this.mode());
    return toDevice(this.deviceRow(id)!);
  }

  async rotateDevice(id: string): Promise<{ device: DeviceRecord; key: Uint8Array }> {
    const r = this.deviceRow(id);
    if (!r) throw new RegistryError(`unknown device "${id}"`);
    const v = r.key_version + 1;
    // K_ks first, outside the transaction (an asynchronous store); the version is checked again inside
    const p = await provisionKey(this.master, this.memberKeys.sink(this.mode()), id, r.created_at, v);
    const key = p.key;
    this.tx(() => {
      if (this.deviceRow(id)?.key_version !== r.key_version) {
        key.fill(0);
        throw new RegistryError(`device "${id}" was changed meanwhile: rotate again`);
      }
      this.stmt("UPDATE devices SET key_version = ?, key_sealed = X'', hs_sealed = ?, status = 'active', updated_at = ? WHERE id = ?")
        .run(v, p.hsSealed, this.now(), id);
      this.stmt('DELETE FROM tickets WHERE device_id = ?').run(id);
      this.stmt('DELETE FROM grace WHERE device_id = ?').run(id);
      // new key = re-provisioned device: its stored counter may start over
      this.stmt('DELETE FROM counters WHERE device_id = ?').run(id);
      this.auditRow('device.rotate', id, `key_version=${v}`, 'admin');
      this.bump();
    });
    return { device: toDevice(this.deviceRow(id)!), key };
  }

  /**
   * Deletes a device and all its state (key, tickets, counter, grace state). A
   * running broker closes its sessions at the next poll. The id may be used
   * again: a device added under it gets a new key, so its counters start over.
   */
  async removeDevice(id: string): Promise<void> {
    this.tx(() => {
      if (!this.deviceRow(id)) throw new RegistryError(`unknown device "${id}"`);
      this.stmt('DELETE FROM tickets WHERE device_id = ?').run(id);
      this.stmt('DELETE FROM counters WHERE device_id = ?').run(id);
      this.stmt('DELETE FROM grace WHERE device_id = ?').run(id);
      this.stmt('DELETE FROM devices WHERE id = ?').run(id);
      this.auditRow('device.remove', id, null, 'admin');
      this.bump();
    });
    await this.memberKeys.forgetAfter(id, this.mode());
  }

  // ---- accounts -----------------------------------------------------------

  async addAccount(name: string, role: string, password: string): Promise<AccountRecord> {
    checkAccountArgs(name, password);
    if (!this.roleExists(role)) throw new RegistryError(`unknown role "${role}"`);
    const { salt, hash } = await hashPassword(password);
    this.tx(() => {
      if (!this.roleExists(role)) throw new RegistryError(`unknown role "${role}"`);
      this.requireFreeName(name);
      this.stmt('INSERT INTO accounts (name, role, status, salt, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)')
        .run(name, role, 'active', salt, hash, this.now());
      this.auditRow('account.add', name, `role=${role}`, 'admin');
      this.bump();
    });
    return this.account(name)!;
  }

  private account(name: string): AccountRecord | undefined {
    const r = this.stmt('SELECT name, role, status, created_at FROM accounts WHERE name = ?').get(name) as
      | { name: string; role: string; status: 'active' | 'disabled'; created_at: number }
      | undefined;
    return r && { name: r.name, role: r.role, status: r.status, createdAt: r.created_at };
  }

  async getAccount(name: string): Promise<AccountRecord | undefined> {
    return this.account(name);
  }

  async listAccounts(): Promise<AccountRecord[]> {
    return (this.stmt('SELECT name FROM accounts ORDER BY name').all() as { name: string }[]).map((r) => this.account(r.name)!);
  }

  async setAccountStatus(name: string, status: 'active' | 'disabled'): Promise<void> {
    this.tx(() => {
      const r = this.stmt('UPDATE accounts SET status = ? WHERE name = ?').run(status, name);
      if (r.changes === 0) throw new RegistryError(`unknown account "${name}"`);
      this.auditRow(status === 'active' ? 'account.enable' : 'account.disable', name, null, 'admin');
      this.bump();
    });
  }

  /** Removes an account; its live sessions are closed by a running broker (and their wills discarded). */
  async removeAccount(name: string): Promise<void> {
    this.tx(() => {
      const r = this.stmt('DELETE FROM accounts WHERE name = ?').run(name);
      if (r.changes === 0) throw new RegistryError(`unknown account "${name}"`);
      this.auditRow('account.remove', name, null, 'admin');
      this.bump();
    });
  }

  async verifyAccount(name: string, password: string): Promise<AccountRecord | undefined> {
    const r = this.stmt('SELECT salt, hash, status FROM accounts WHERE name = ?').get(name) as
      | { salt: Buffer; hash: Buffer; status: string }
      | undefined;
    const ok = await verifyPassword(password, r ? { salt: r.salt, hash: r.hash } : undefined);
    if (!ok || r?.status !== 'active') return undefined;
    return this.account(name);
  }

  // ---- phase-2 state (raw rows; broker/registry/ticket-store.ts adapts them) ----
  // Writes go through the group commit: durable when they resolve.

  async getCounter(deviceId: string): Promise<number> {
    const r = this.stmt('SELECT counter FROM counters WHERE device_id = ?').get(deviceId) as
      | { counter: number }
      | undefined;
    return r ? r.counter : -1;
  }

  /** One statement, run inside the group's transaction in queue order: a concurrent equal or lower value loses. */
  advanceCounter(deviceId: string, value: number): Promise<boolean> {
    return this.commits.run(() => {
      const r = this.stmt(
        `INSERT INTO counters (device_id, counter) VALUES (?, ?)
         ON CONFLICT(device_id) DO UPDATE SET counter = excluded.counter WHERE excluded.counter > counters.counter`,
      ).run(deviceId, value);
      return r.changes === 1;
    });
  }

  putTicketRow(deviceId: string, sid: string, record: Uint8Array, expiresAt: number): Promise<void> {
    return this.commits.run(() => {
      this.stmt(
        `INSERT INTO tickets (device_id, sid, record_sealed, expires_at, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(device_id, sid) DO UPDATE SET record_sealed = excluded.record_sealed,
           expires_at = excluded.expires_at, updated_at = excluded.updated_at`,
      ).run(deviceId, sid, Buffer.from(record), expiresAt, this.now());
    });
  }

  async getTicketRow(deviceId: string, sid: string): Promise<{ record: Uint8Array; expiresAt: number } | undefined> {
    const r = this.stmt('SELECT record_sealed, expires_at FROM tickets WHERE device_id = ? AND sid = ?').get(
      deviceId,
      sid,
    ) as { record_sealed: Buffer; expires_at: number } | undefined;
    return r && { record: new Uint8Array(r.record_sealed), expiresAt: r.expires_at };
  }

  deleteTicketRow(deviceId: string, sid: string): Promise<void> {
    return this.commits.run(() => void this.stmt('DELETE FROM tickets WHERE device_id = ? AND sid = ?').run(deviceId, sid));
  }

  deleteTicketsOf(deviceId: string): Promise<void> {
    return this.commits.run(() => void this.stmt('DELETE FROM tickets WHERE device_id = ?').run(deviceId));
  }

  resetCounter(deviceId: string): Promise<void> {
    return this.commits.run(() => void this.stmt('DELETE FROM counters WHERE device_id = ?').run(deviceId));
  }

  async ticketCount(deviceId?: string): Promise<number> {
    const r = (
      deviceId
        ? this.stmt('SELECT COUNT(*) AS n FROM tickets WHERE device_id = ?').get(deviceId)
        : this.stmt('SELECT COUNT(*) AS n FROM tickets').get()
    ) as { n: number };
    return r.n;
  }

  /**
   * Per device: stored phase-2 tickets (resumable sessions), when one was last
   * written (each phase 1 and phase 2 writes one) and the highest counter.
   * One grouped read for the whole fleet (the operator console's device list).
   */
  async deviceActivity(): Promise<Map<string, DeviceActivity>> {
    const out = new Map<string, DeviceActivity>();
    const rows = this.stmt(
      'SELECT device_id, COUNT(*) AS n, MAX(updated_at) AS last, MAX(expires_at) AS expires FROM tickets GROUP BY device_id',
    ).all() as { device_id: string; n: number; last: number; expires: number }[];
    for (const r of rows) out.set(r.device_id, { tickets: r.n, lastTicketAt: r.last, ticketExpiresAt: r.expires, counter: -1 });
    for (const r of this.stmt('SELECT device_id, counter FROM counters').all() as { device_id: string; counter: number }[]) {
      const a = out.get(r.device_id);
      if (a) a.counter = r.counter;
      else out.set(r.device_id, { tickets: 0, lastTicketAt: null, ticketExpiresAt: null, counter: r.counter });
    }
    return out;
  }

  async purgeExpiredTickets(): Promise<number> {
    return this.stmt('DELETE FROM tickets WHERE expires_at <= ?').run(this.now()).changes;
  }

  // ---- grace state across a graceful restart (§8.5) ---------------------------

  async saveGrace(records: GraceRow[]): Promise<void> {
    this.tx(() => {
      const ins = this.stmt(
        'INSERT INTO grace (device_id, until, record_sealed) VALUES (?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET until = excluded.until, record_sealed = excluded.record_sealed',
      );
      for (const r of records) ins.run(r.devId, r.until, Buffer.from(r.sealed));
    });
  }

  async takeGrace(now: number): Promise<GraceRow[]> {
    return this.tx(() => {
      const rows = this.stmt('SELECT device_id, until, record_sealed FROM grace WHERE until > ?').all(now) as { device_id: string; until: number; record_sealed: Buffer }[];
      this.stmt('DELETE FROM grace').run();
      return rows.map((r) => ({ devId: r.device_id, until: r.until, sealed: new Uint8Array(r.record_sealed) }));
    });
  }

  sealSecret(label: string, data: Uint8Array): Uint8Array {
    return new Uint8Array(sealDeviceKey(this.master, label, 0, data));
  }

  openSecret(label: string, sealed: Uint8Array): Uint8Array {
    return openDeviceKey(this.master, label, 0, Buffer.from(sealed));
  }

  // ---- audit ----------------------------------------------------------------

  private auditRow(kind: string, subject: string | null, detail: string | null, source: string | null): void {
    this.stmt('INSERT INTO audit (at, kind, subject, detail, source) VALUES (?, ?, ?, ?, ?)')
      .run(this.now(), kind, subject, detail, source);
  }

  async audit(kind: string, subject: string | null, detail: string | null = null, source: string | null = null): Promise<void> {
    this.auditRow(kind, subject, detail, source);
  }

  async listAudit(opts: AuditQuery = {}): Promise<AuditEntry[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (opts.afterSeq !== undefined) {
      where.push('seq > ?');
      args.push(opts.afterSeq);
    }
    if (opts.source) {
      where.push('source = ?');
      args.push(opts.source);
    }
    if (opts.kind) {
      where.push('kind = ?');
      args.push(opts.kind);
    }
    if (opts.subject) {
      where.push('subject = ?');
      args.push(opts.subject);
    }
    const sql = `SELECT * FROM audit ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY seq DESC LIMIT ?`;
    return this.stmt(sql).all(...args, opts.limit ?? 100) as AuditEntry[];
  }
}

function toDevice(r: DeviceRow): DeviceRecord {
  return {
    id: r.id,
    role: r.role,
    status: r.status,
    keyVersion: r.key_version,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}
