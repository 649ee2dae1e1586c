/**
 * The protocol's TicketStore (firmware/secure) on the SQLite registry.
 * Ticket secrets (authKey, chainKey) are sealed with the registry master key
 * (AES-256-GCM, bound to device id and sid), so a copied registry.db alone
 * does not let anyone resume a device's session. better-sqlite3 is
 * synchronous: every method is durable (WAL commit) before it resolves.
 */
import type { TicketRecord, TicketStore } from '../../firmware/secure/index.js';
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import { MqsecError } from '../../firmware/core/errors.js';
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
  constructor(private readonly registry: Registry) {}

  async getCounter(devId: string): Promise<number> {
    return storage(() => this.registry.getCounter(devId));
  }

  async advanceCounter(devId: string, value: number): Promise<boolean> {
    return storage(() => this.registry.advanceCounter(devId, value));
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
    storage(() => {
      const sealed = this.registry.sealSecret(label(t.devId, sidHex), new TextEncoder().encode(JSON.stringify(stored)));
      this.registry.putTicketRow(t.devId, sidHex, sealed, t.expiresAt);
    });
  }

  async deleteTicket(devId: string, sid: Uint8Array): Promise<void> {
    storage(() => this.registry.deleteTicketRow(devId, toHex(sid)));
  }

  async revokeDevice(devId: string): Promise<void> {
    storage(() => this.registry.deleteTicketsOf(devId));
  }

  async resetDevice(devId: string): Promise<void> {
    storage(() => {
      this.registry.deleteTicketsOf(devId);
      this.registry.resetCounter(devId);
    });
  }
}
