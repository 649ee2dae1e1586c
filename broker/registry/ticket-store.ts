/**
 * The protocol's TicketStore (firmware/secure) on the SQLite registry.
 * Ticket secrets (authKey, chainKey) are sealed with the registry master key
 * (AES-256-GCM, bound to device id and sid), so a copied registry.db alone
 * does not let anyone resume a device's session. Every method is durable
 * (WAL commit) before it resolves; the writes of one event-loop turn share
 * one commit (group commit, broker/registry/group-commit.ts).
 */
import type { TicketRecord, TicketStore } from '../../firmware/secure/index.js';
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import { MqsecError } from '../../firmware/core/errors.js';
import { GroupCommit } from './group-commit.js';
import type { Registry } from './registry.js';

interface StoredTicket {
  suite: number;
  authKey: string;
  /** Absent in tickets of the first release (which had 8-byte sids and can no longer be named). */
  chainStart?: number;
  chainIndex: number;
  chainKey: string;
}

function label(devId: string, sidHex: string): string {
  return `ticket|${devId}|${sidHex}`;
}

function storage<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof MqsecError) throw e;
    throw new MqsecError('STORAGE', e instanceof Error ? e.message : String(e));
  }
}

export class SqliteTicketStore implements TicketStore {
  /** Batches the writes of one event-loop turn into one transaction; each resolves after the commit. */
  readonly commits: GroupCommit;

  constructor(private readonly registry: Registry) {
    this.commits = new GroupCommit((body) => registry.inTransaction(body));
  }

  /** A write through the group commit; any failure (the write's or the commit's) becomes STORAGE. */
  private write<T>(f: () => T): Promise<T> {
    return this.commits.run(f).catch((e: unknown) => storage(() => {
      throw e;
    }));
  }

  async getCounter(devId: string): Promise<number> {
    return storage(() => this.registry.getCounter(devId));
  }

  /** The compare-and-set runs inside the group's transaction, in queue order: a concurrent equal or lower value loses. */
  async advanceCounter(devId: string, value: number): Promise<boolean> {
    return this.write(() => this.registry.advanceCounter(devId, value));
  }

  async getTicket(devId: string, sid: Uint8Array): Promise<TicketRecord | undefined> {
    const sidHex = toHex(sid);
    return storage(() => {
      const row = this.registry.getTicketRow(devId, sidHex);
      if (!row) return undefined;
      const json = new TextDecoder().decode(this.registry.openSecret(label(devId, sidHex), row.record));
      const t = JSON.parse(json) as StoredTicket;
      return {
        devId,
        sid: new Uint8Array(sid),
        suite: t.suite,
        authKey: fromHex(t.authKey),
        chainStart: t.chainStart ?? t.chainIndex,
        chainIndex: t.chainIndex,
        chainKey: fromHex(t.chainKey),
        expiresAt: row.expiresAt,
      };
    });
  }

  async putTicket(t: TicketRecord): Promise<void> {
    const sidHex = toHex(t.sid);
    const stored: StoredTicket = {
      suite: t.suite,
      authKey: toHex(t.authKey),
      chainStart: t.chainStart,
      chainIndex: t.chainIndex,
      chainKey: toHex(t.chainKey),
    };
    const sealed = storage(() => this.registry.sealSecret(label(t.devId, sidHex), new TextEncoder().encode(JSON.stringify(stored))));
    await this.write(() => this.registry.putTicketRow(t.devId, sidHex, sealed, t.expiresAt));
  }

  async deleteTicket(devId: string, sid: Uint8Array): Promise<void> {
    await this.write(() => this.registry.deleteTicketRow(devId, toHex(sid)));
  }

  async revokeDevice(devId: string): Promise<void> {
    await this.write(() => this.registry.deleteTicketsOf(devId));
  }

  async resetDevice(devId: string): Promise<void> {
    await this.write(() => {
      this.registry.deleteTicketsOf(devId);
      this.registry.resetCounter(devId);
    });
  }
}
