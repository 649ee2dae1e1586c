/**
 * The registry's storage interface: devices, accounts, roles and rules,
 * phase-2 tickets and counters, audit, QoS 1 grace records. One interface,
 * two implementations, one shared test suite (test/broker/registry-store.ts,
 * run against each):
 *
 * - SQLite (broker/registry/registry.ts), the default for one node: a file in
 *   the data directory, group commit for the handshake's writes.
 * - PostgreSQL (broker/registry/pg-registry.ts), for several broker nodes
 *   sharing one registry: the same state, every write one transaction, the
 *   counter compare-and-set one statement, and changes pushed to every node
 *   with LISTEN/NOTIFY.
 *
 * Everything that may cross a network is async. Secrets are sealed and opened
 * locally, under the master key in the node's data directory (every node of
 * one registry holds the same master.key; the database alone opens nothing).
 * A backend that cannot be reached answers RegistryUnavailableError, which the
 * broker turns into CONNACK 3 (server unavailable) for new logins.
 */
import type { TicketStore } from '../../firmware/secure/index.js';
import { MqsecError } from '../../firmware/core/errors.js';
import type { Action, ProtectionMode, Role } from '../policy/policy.js';

export type DeviceStatus = 'active' | 'revoked';

export interface DeviceRecord {
  id: string;
  role: string;
  status: DeviceStatus;
  keyVersion: number;
  createdAt: number;
  updatedAt: number;
}

export interface AccountRecord {
  name: string;
  role: string;
  status: 'active' | 'disabled';
  createdAt: number;
}

/** What the registry knows of a device's use (Registry.deviceActivity). */
export interface DeviceActivity {
  /** Stored phase-2 tickets (resumable sessions). */
  tickets: number;
  /** When a ticket was last written (each phase 1 and phase 2 writes one), Unix ms. */
  lastTicketAt: number | null;
  /** When the latest-expiring ticket expires, Unix ms. */
  ticketExpiresAt: number | null;
  /** Highest phase-2 counter accepted; -1 none. */
  counter: number;
}

export interface AuditEntry {
  seq: number;
  at: number;
  kind: string;
  subject: string | null;
  detail: string | null;
  source: string | null;
}

export interface AuditQuery {
  limit?: number;
  kind?: string;
  subject?: string;
  source?: string;
  afterSeq?: number;
}

export interface GraceRow {
  devId: string;
  until: number;
  sealed: Uint8Array;
}

/** K_auth and K_psk of a principal (§4.1, the registry split §14.2), and its key version. Caller wipes. */
export interface HandshakeKeys {
  authKey: Uint8Array;
  pskKey: Uint8Array;
  keyVersion: number;
}

export interface DeviceKeyStateRow {
  status: DeviceStatus;
  keyVersion: number;
  createdAt: number;
}

/** Audit kind of an operator's group rotation (read back by the broker). */
export const GROUP_ROTATE = 'group.rotate';

/** A refused registry operation (unknown device, bad name...): the message is for the operator. */
export class RegistryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RegistryError';
  }
}

/**
 * The registry's backend cannot be reached right now (database down,
 * connection lost). Its code is STORAGE, so the handshake and the broker
 * answer CONNACK 3 (server unavailable); the registry recovers by itself
 * when the backend is back.
 */
export class RegistryUnavailableError extends MqsecError {
  constructor(readonly reason: string) {
    super('STORAGE', `registry unavailable: ${reason}`);
    this.name = 'RegistryUnavailableError';
  }
}

export interface Registry {
  /** Which implementation: 'sqlite' or 'postgres'. */
  readonly backend: 'sqlite' | 'postgres';
  /** The node's own data directory (master key, TLS files, broker lock). */
  readonly dataDir: string;
  /** Where the shared state lives, for logs (a file, or a URL without its password). */
  readonly location: string;

  schemaVersion(): Promise<number>;
  /** Raised by one by every admin change, in the change's own transaction. */
  revision(): Promise<number>;

  listRoles(): Promise<Role[]>;
  getRole(name: string): Promise<Role | undefined>;
  addRole(name: string, opts?: { plaintext?: boolean }): Promise<void>;
  /** Adds a rule, or changes the protection mode of an existing one (docs/protocol.md §14.1). */
  addRule(role: string, action: Action, filter: string, mode?: ProtectionMode): Promise<void>;
  removeRule(role: string, action: Action, filter: string): Promise<boolean>;
  /**
   * Operator rotation of one end-to-end group (docs/protocol.md §14.3): an
   * audit row of kind `group.rotate`; a running broker hands it to the key
   * service at its next sync, which moves the group to a new epoch.
   */
  rotateGroup(filter: string): Promise<void>;

  /**
   * Registers a device and returns its fresh 32-byte key K (shown once, never
   * stored): K_auth | K_psk sealed in the registry, K_ks in the key service's
   * store (§14.2).
   */
  addDevice(id: string, role: string): Promise<{ device: DeviceRecord; key: Uint8Array }>;
  getDevice(id: string): Promise<DeviceRecord | undefined>;
  listDevices(): Promise<DeviceRecord[]>;
  /** Status and key identity of every device (one query). */
  deviceKeyStates(): Promise<Map<string, DeviceKeyStateRow>>;
  /**
   * K_auth and K_psk of an active principal (§4.1), or undefined (unknown or
   * revoked): all the broker needs for phases 1 and 2. Caller zeroises.
   */
  handshakeKeys(id: string): Promise<HandshakeKeys | undefined>;
  /** 'external' once a broker of this registry ran with an external key service, else 'embedded'. */
  keyServiceMode(): Promise<'embedded' | 'external'>;
  setKeyServiceMode(mode: 'embedded' | 'external'): Promise<void>;

  /** Revokes: status revoked, tickets, grace records and (where reachable) K_ks deleted. */
  revokeDevice(id: string): Promise<DeviceRecord>;
  /** New key, key version + 1, tickets, grace records and counter dropped; re-activates a revoked device. */
  rotateDevice(id: string): Promise<{ device: DeviceRecord; key: Uint8Array }>;
  /** Deletes a device and all its state; the id may be used again (with a new key). */
  removeDevice(id: string): Promise<void>;

  addAccount(name: string, role: string, password: string): Promise<AccountRecord>;
  getAccount(name: string): Promise<AccountRecord | undefined>;
  listAccounts(): Promise<AccountRecord[]>;
  setAccountStatus(name: string, status: 'active' | 'disabled'): Promise<void>;
  removeAccount(name: string): Promise<void>;
  /** The account if the password is right and the account active; constant time in the password. */
  verifyAccount(name: string, password: string): Promise<AccountRecord | undefined>;

  // phase-2 state (raw rows; broker/registry/ticket-store.ts seals and adapts them)
  getCounter(deviceId: string): Promise<number>;
  /**
   * Sets the counter to `value` iff strictly greater than the stored one, as
   * one atomic compare-and-set: of any number of concurrent calls with the
   * same value (on any node) exactly one returns true.
   */
  advanceCounter(deviceId: string, value: number): Promise<boolean>;
  putTicketRow(deviceId: string, sid: string, record: Uint8Array, expiresAt: number): Promise<void>;
  getTicketRow(deviceId: string, sid: string): Promise<{ record: Uint8Array; expiresAt: number } | undefined>;
  deleteTicketRow(deviceId: string, sid: string): Promise<void>;
  deleteTicketsOf(deviceId: string): Promise<void>;
  resetCounter(deviceId: string): Promise<void>;
  ticketCount(deviceId?: string): Promise<number>;
  /** Per device: stored tickets, last ticket write, latest expiry and the counter (one grouped read). */
  deviceActivity(): Promise<Map<string, DeviceActivity>>;
  purgeExpiredTickets(): Promise<number>;

  // QoS 1 grace state across a graceful restart (§8.5)
  /** Stores these grace records, each replacing its device's earlier one (one transaction). */
  saveGrace(records: GraceRow[]): Promise<void>;
  /** Reads and deletes the stored grace records; expired ones are dropped unread. */
  takeGrace(now: number): Promise<GraceRow[]>;

  /** Master-key AEAD for other at-rest secrets (tickets, grace records), bound to a label. Local: no I/O. */
  sealSecret(label: string, data: Uint8Array): Uint8Array;
  openSecret(label: string, sealed: Uint8Array): Uint8Array;

  audit(kind: string, subject: string | null, detail?: string | null, source?: string | null): Promise<void>;
  listAudit(opts?: AuditQuery): Promise<AuditEntry[]>;

  /**
   * Changes committed by any node (or an admin command), pushed: `listener`
   * runs soon after each. Only a backend shared over the network pushes
   * (PostgreSQL LISTEN/NOTIFY); without `watch` the broker polls `revision()`.
   */
  watch?(listener: () => void): () => void;

  /** Writes still queued are committed first; the master key is zeroised. */
  close(): Promise<void>;
}
