/**
 * The protocol's TicketStore (firmware/secure) on the registry, whichever its
 * backend. Ticket secrets (authKey, chainKey) are sealed with the registry
 * master key (AES-256-GCM, bound to device id and sid) before they are stored,
 * so a copied database alone does not let anyone resume a device's session.
 * Every method is durable before it resolves (SQLite: the writes of one
 * event-loop turn share one commit, broker/registry/group-commit.ts;
 * PostgreSQL: each write is its own committed statement). The counter
 * compare-and-set is the registry's: atomic across every node of one registry.
 */
import type { TicketRecord, TicketStore } from '../../firmware/secure/index.js';
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import { MqsecError } from '../../firmware/core/errors.js';
import type { Registry } from './store.js';

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

/** Any failure (a write's, a commit's, the database being unreachable) becomes STORAGE: CONNACK 3. */
async function storage<T>(f: () => T | Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof MqsecError) throw e;
    throw new MqsecError('STORAGE', e instanceof Error ? e.message : String(e));
  }
}

export class RegistryTicketStore implements TicketStore {
  constructor(private readonly registry: Registry) {}

  async getCounter(devId: string): Promise<number> {
    return storage(() => this.registry.getCounter(devId));
  }

  /** The registry's compare-and-set: of concurrent equal or lower values (on any node) at most one wins. */
  async advanceCounter(devId: string, value: number): Promise<boolean> {
    return storage(() => this.registry.advanceCounter(devId, value));
  }

  async getTicket(devId: string, sid: Uint8Array): Promise<TicketRecord | undefined> {
    const sidHex = toHex(sid);
    return storage(async () => {
      const row = await this.registry.getTicketRow(devId, sidHex);
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
    await storage(async () => {
      const sealed = this.registry.sealSecret(label(t.devId, sidHex), new TextEncoder().encode(JSON.stringify(stored)));
      await this.registry.putTicketRow(t.devId, sidHex, sealed, t.expiresAt);
    });
  }

  async deleteTicket(devId: string, sid: Uint8Array): Promise<void> {
    await storage(() => this.registry.deleteTicketRow(devId, toHex(sid)));
  }

  async revokeDevice(devId: string): Promise<void> {
    await storage(() => this.registry.deleteTicketsOf(devId));
  }

  async resetDevice(devId: string): Promise<void> {
    await storage(() => Promise.all([this.registry.deleteTicketsOf(devId), this.registry.resetCounter(devId)]));
  }
}
