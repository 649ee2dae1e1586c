/**
 * Broker-side durable state of the protocol (docs/protocol.md §9.3): the
 * highest device counter per device and the resumption tickets. The broker
 * implements TicketStore on SQLite; MemoryTicketStore serves tests and
 * single-process demos and can inject storage failures.
 */
import { toHex } from '../core/bytes.js';
import { fail } from '../core/errors.js';

export interface TicketRecord {
  devId: string;
  /** 8 bytes (§4.3). */
  sid: Uint8Array;
  suite: number;
  /** K_tok: checks resume-token tags (§6.1). */
  authKey: Uint8Array;
  /** First counter the ticket serves (phase-1 counter + 1); it serves TICKET_COUNTER_SPAN values (§6.5). */
  chainStart: number;
  /** Position of chainKey on the resumption chain (§4.4). */
  chainIndex: number;
  /** S_chainIndex. */
  chainKey: Uint8Array;
  /** Broker wall clock, ms. */
  expiresAt: number;
}

/** Every method is durable before it resolves; a rejection means "nothing changed" or "unknown": callers fail closed. */
export interface TicketStore {
  /** Highest device counter accepted for devId in either phase, -1 if none. */
  getCounter(devId: string): Promise<number>;
  /** Atomically sets the counter to `value` iff value > current; resolves false otherwise. */
  advanceCounter(devId: string, value: number): Promise<boolean>;
  getTicket(devId: string, sid: Uint8Array): Promise<TicketRecord | undefined>;
  /** Insert or replace by (devId, sid). */
  putTicket(ticket: TicketRecord): Promise<void>;
  deleteTicket(devId: string, sid: Uint8Array): Promise<void>;
  /** Revocation: deletes every ticket of devId at once (the counter stays, so old tokens stay dead). */
  revokeDevice(devId: string): Promise<void>;
  /** Re-provisioning (new device key): deletes the tickets and the counter. */
  resetDevice(devId: string): Promise<void>;
}

export type TicketStoreOp = 'getCounter' | 'advanceCounter' | 'getTicket' | 'putTicket' | 'deleteTicket' | 'revokeDevice' | 'resetDevice';

function copyTicket(t: TicketRecord): TicketRecord {
  return { ...t, sid: t.sid.slice(), authKey: t.authKey.slice(), chainKey: t.chainKey.slice() };
}

export class MemoryTicketStore implements TicketStore {
  private readonly counters = new Map<string, number>();
  private readonly tickets = new Map<string, Map<string, TicketRecord>>();
  private failures: TicketStoreOp[] = [];

  /** Test hook: the next call of `op` rejects with STORAGE and changes nothing. */
  failNext(op: TicketStoreOp): void {
    this.failures.push(op);
  }

  /** Test hook: disarms failures that were not triggered. */
  clearFailures(): void {
    this.failures = [];
  }

  private check(op: TicketStoreOp): void {
    const i = this.failures.indexOf(op);
    if (i >= 0) {
      this.failures.splice(i, 1);
      fail('STORAGE', `injected ${op} failure`);
    }
  }

  async getCounter(devId: string): Promise<number> {
    this.check('getCounter');
    return this.counters.get(devId) ?? -1;
  }
  async advanceCounter(devId: string, value: number): Promise<boolean> {
    this.check('advanceCounter');
    if (value <= (this.counters.get(devId) ?? -1)) return false;
    this.counters.set(devId, value);
    return true;
  }
  async getTicket(devId: string, sid: Uint8Array): Promise<TicketRecord | undefined> {
    this.check('getTicket');
    const t = this.tickets.get(devId)?.get(toHex(sid));
    return t ? copyTicket(t) : undefined;
  }
  async putTicket(ticket: TicketRecord): Promise<void> {
    this.check('putTicket');
    let m = this.tickets.get(ticket.devId);
    if (!m) this.tickets.set(ticket.devId, (m = new Map()));
    m.set(toHex(ticket.sid), copyTicket(ticket));
  }
  async deleteTicket(devId: string, sid: Uint8Array): Promise<void> {
    this.check('deleteTicket');
    this.tickets.get(devId)?.delete(toHex(sid));
  }
  async revokeDevice(devId: string): Promise<void> {
    this.check('revokeDevice');
    this.tickets.delete(devId);
  }
  async resetDevice(devId: string): Promise<void> {
    this.check('resetDevice');
    this.tickets.delete(devId);
    this.counters.delete(devId);
  }
  /** For tests: number of tickets held for devId. */
  ticketCount(devId: string): number {
    return this.tickets.get(devId)?.size ?? 0;
  }
}
