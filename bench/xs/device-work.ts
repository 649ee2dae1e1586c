/**
 * The device's share of mqsec's work, timed where it runs: the same module
 * is bundled into the real XS engine (bench/xs/device-work.xs-entry.ts) and
 * imported under Node, so both figures come from identical code with the
 * portable noble CryptoSuite a device ships today.
 *
 * Only device-side computation is timed (the broker's replies are computed
 * by the host and handed in): phase 1 = KX1 (ephemeral X25519 key pair +
 * MAC) + CONNACK handling + KX2 check and KX3 (X25519, key schedule, tags);
 * phase 2 = resume credential (counter, chain ratchet, MAC, traffic keys) +
 * CONNACK handling; seal/open = one 64-byte application payload.
 *
 * Platform-free (runs under XS): time comes from an injected Clock.
 */
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import type { Clock, Storage } from '../../firmware/core/platform.js';

export interface DeviceWorkOptions {
  suite: CryptoSuite;
  storage: Storage;
  clock: Clock;
  devId: string;
  deviceKey: Uint8Array;
}

export interface Timed<T> {
  value: T;
  ms: number;
}

/** Steps driven by the host; every step returns what it computed and how long it took. */
export class DeviceWork {
  private readonly session: DeviceSecureSession;
  private readonly clock: Clock;

  constructor(o: DeviceWorkOptions) {
    this.clock = o.clock;
    // an explicit key that every Storage accepts ([A-Za-z0-9_-], <= 15 chars: NVS rules)
    this.session = new DeviceSecureSession({ suite: o.suite, devId: o.devId, deviceKey: o.deviceKey, storage: o.storage, storageKey: 'mqsec_state' });
  }

  /** Drops the ticket so the next connect is phase 1 (not timed). */
  async forgetTicket(): Promise<void> {
    await this.session.forgetTicket();
  }

  /** Phase 1 (or 2 when a ticket is held): credentials for CONNECT, then CONNACK 0 handled. */
  async connect(): Promise<Timed<{ password: Uint8Array; phase: number }>> {
    const t0 = this.clock.now();
    const c = await this.session.connectCredentials();
    await this.session.onConnack(0);
    const ms = this.clock.now() - t0;
    return { value: { password: c.password, phase: c.phase }, ms };
  }

  /** Phase 1: KX2 in, KX3 out. */
  async kx2(topic: string, payload: Uint8Array): Promise<Timed<{ topic: string; payload: Uint8Array }>> {
    const t0 = this.clock.now();
    const r = await this.session.handleIncoming(topic, payload);
    const ms = this.clock.now() - t0;
    if (r.kind !== 'handshake') throw new Error(`KX2 not accepted: ${r.kind === 'dropped' ? r.error.code : r.kind}`);
    return { value: r.reply, ms };
  }

  /** Phase 2: the broker's confirmation in (docs/protocol.md §6.4); keys are derived here. */
  async confirm(topic: string, payload: Uint8Array): Promise<Timed<true>> {
    const t0 = this.clock.now();
    const r = await this.session.handleIncoming(topic, payload);
    const ms = this.clock.now() - t0;
    if (r.kind !== 'confirmed') throw new Error(`confirmation not accepted: ${r.kind === 'dropped' ? r.error.code : r.kind}`);
    return { value: true, ms };
  }

  /** Seals `count` copies of `plaintext`; returns the envelopes and the mean ms per seal. */
  sealMany(topic: string, plaintext: Uint8Array, count: number): Timed<Uint8Array[]> {
    const out: Uint8Array[] = [];
    const t0 = this.clock.now();
    for (let i = 0; i < count; i++) out.push(this.session.seal(topic, plaintext));
    return { value: out, ms: (this.clock.now() - t0) / count };
  }

  /** Opens envelopes from the broker; returns how many opened and the mean ms per open. */
  async openMany(topic: string, envelopes: Uint8Array[]): Promise<Timed<number>> {
    let opened = 0;
    const t0 = this.clock.now();
    for (const e of envelopes) {
      const r = await this.session.handleIncoming(topic, e);
      if (r.kind === 'message') opened++;
    }
    return { value: opened, ms: (this.clock.now() - t0) / envelopes.length };
  }

  /** Connection closed (keys of this connection become the previous epoch). */
  connectionLost(): void {
    this.session.onConnectionLost();
  }
}
