/**
 * Payload envelope (docs/protocol.md §8): AEAD seal/open of PUBLISH payloads
 * with the topic bound as AAD, per-direction sequence numbers, nonce = static
 * IV xor seq, and a sliding replay window.
 */
import { fail } from '../core/errors.js';
import type { CryptoSuite } from '../crypto/suite.js';
import { DEFAULT_REPLAY_WINDOW, SEQ_LIMIT } from './constants.js';
import { buildEnvelope, envelopeAad, parseEnvelope } from './messages.js';

/** §8.3: nonce = IV xor seq (seq big-endian in the low-order bytes). Unique while seq never repeats under a key. */
export function envelopeNonce(iv: Uint8Array, seq: number): Uint8Array {
  const n = iv.slice();
  let s = seq;
  for (let i = n.length - 1; i >= 0 && s > 0; i--) {
    n[i] ^= s & 0xff;
    s = Math.floor(s / 256);
  }
  return n;
}

export function sealEnvelope(suite: CryptoSuite, key: Uint8Array, iv: Uint8Array, epoch: number, seq: number, topic: string, plaintext: Uint8Array): Uint8Array {
  if (seq >= SEQ_LIMIT) fail('NONCE_EXHAUSTED', 'sequence number limit reached: reconnect to rekey');
  return buildEnvelope(epoch, seq, suite.aeadSeal(key, envelopeNonce(iv, seq), plaintext, envelopeAad(epoch, topic)));
}

/**
 * §8.4 sliding window over the last `size` sequence numbers (RFC 4303 §3.4.3
 * style). `check` is side-effect free, `accept` is called only once the AEAD
 * tag verified, so forged envelopes cannot move the window.
 */
export class ReplayWindow {
  private highest = -1;
  private readonly seen: Uint8Array;
  constructor(readonly size: number = DEFAULT_REPLAY_WINDOW) {
    if (!Number.isInteger(size) || size < 1 || size > 4096) fail('INTERNAL', 'replay window size');
    this.seen = new Uint8Array(size);
  }
  /** The window's state, for a broker that keeps its grace keys across a restart (§8.5). */
  snapshot(): { highest: number; seen: Uint8Array } {
    return { highest: this.highest, seen: this.seen.slice() };
  }
  static restore(s: { highest: number; seen: Uint8Array }): ReplayWindow {
    if (!Number.isInteger(s.highest) || s.highest < -1 || s.highest >= SEQ_LIMIT) fail('MALFORMED', 'replay window: bad highest');
    const w = new ReplayWindow(s.seen.length);
    for (let i = 0; i < s.seen.length; i++) if (s.seen[i] > 1) fail('MALFORMED', 'replay window: bad entry');
    w.highest = s.highest;
    w.seen.set(s.seen);
    return w;
  }
  /** True when seq is new and not older than the window. */
  check(seq: number): boolean {
    if (seq > this.highest) return true;
    if (this.highest - seq >= this.size) return false;
    return this.seen[seq % this.size] === 0;
  }
  accept(seq: number): void {
    if (!this.check(seq)) fail('REPLAY', 'sequence number seen or too old');
    if (seq > this.highest) {
      const clear = Math.min(seq - this.highest, this.size);
      for (let i = 1; i <= clear; i++) this.seen[(this.highest + i + this.size) % this.size] = 0;
      this.highest = seq;
    }
    this.seen[seq % this.size] = 1;
  }
}

/**
 * One-entry cache of the AAD (§8.1, epoch | UTF-8 topic) of the last topic
 * used: a connection usually seals or opens on the same topic again and
 * again, and encoding the topic was a visible per-message cost on the broker.
 * The cached bytes are only ever read (by the AEAD), never handed out.
 */
class AadCache {
  private topic: string | undefined;
  private aad: Uint8Array | undefined;
  constructor(private readonly epoch: number) {}
  get(topic: string): Uint8Array {
    if (topic !== this.topic || !this.aad) {
      this.aad = envelopeAad(this.epoch, topic);
      this.topic = topic;
    }
    return this.aad;
  }
}

/** Sending half of one connection's keys (§8.3). */
export class TxState {
  private seq = 0;
  private readonly aads: AadCache;
  constructor(
    private readonly suite: CryptoSuite,
    readonly epoch: number,
    private key: Uint8Array,
    private iv: Uint8Array,
  ) {
    this.aads = new AadCache(epoch);
  }
  get nextSeq(): number {
    return this.seq;
  }
  seal(topic: string, plaintext: Uint8Array): Uint8Array {
    if (this.seq >= SEQ_LIMIT) fail('NONCE_EXHAUSTED', 'sequence number limit reached: reconnect to rekey');
    // sealEnvelope inlined, with the cached AAD: byte for byte the same envelope
    const seq = this.seq;
    const env = buildEnvelope(this.epoch, seq, this.suite.aeadSeal(this.key, envelopeNonce(this.iv, seq), plaintext, this.aads.get(topic)));
    this.seq++; // never reused, even if the caller drops the envelope
    return env;
  }
  /** Opens an envelope this side sealed itself (QoS 1 re-seal after a key change, §8.5); no replay window. */
  reopen(topic: string, envelope: Uint8Array): Uint8Array | undefined {
    const env = parseEnvelope(envelope);
    if (env.epoch !== this.epoch) return undefined;
    return this.suite.aeadOpen(this.key, envelopeNonce(this.iv, env.seq), env.sealed, envelopeAad(env.epoch, topic));
  }
  destroy(): void {
    this.key.fill(0);
    this.iv.fill(0);
    this.seq = SEQ_LIMIT;
  }
}

/** Receiving half of one connection's keys with its replay window (§8.4). */
/** A receive state written down: what a broker keeps (sealed) across a graceful restart (§8.5). */
export interface RxSnapshot {
  epoch: number;
  key: Uint8Array;
  iv: Uint8Array;
  highest: number;
  seen: Uint8Array;
}

export class RxState {
  private readonly window: ReplayWindow;
  private readonly aads: AadCache;
  constructor(
    private readonly suite: CryptoSuite,
    readonly epoch: number,
    private key: Uint8Array,
    private iv: Uint8Array,
    /** A window size for a fresh connection, or a restored window (§8.5, restore). */
    window: number | ReplayWindow = DEFAULT_REPLAY_WINDOW,
  ) {
    this.window = typeof window === 'number' ? new ReplayWindow(window) : window;
    this.aads = new AadCache(epoch);
  }
  /** Copies of the keys and the window; the caller seals them at rest and wipes them. */
  snapshot(): RxSnapshot {
    return { epoch: this.epoch, key: this.key.slice(), iv: this.iv.slice(), ...this.window.snapshot() };
  }
  static restore(suite: CryptoSuite, s: RxSnapshot): RxState {
    if (!Number.isInteger(s.epoch) || s.epoch < 0 || s.epoch > 255) fail('MALFORMED', 'receive state: bad epoch');
    if (s.key.length !== suite.aeadKeyLength || s.iv.length !== suite.aeadNonceLength) fail('MALFORMED', 'receive state: bad key or IV length');
    return new RxState(suite, s.epoch, s.key.slice(), s.iv.slice(), ReplayWindow.restore(s));
  }
  /** Opens a parsed envelope of this epoch; throws REPLAY or DECRYPT_FAILED, the window moves only on success. */
  open(topic: string, envelope: Uint8Array): Uint8Array {
    const env = parseEnvelope(envelope);
    if (env.epoch !== this.epoch) fail('UNKNOWN_SESSION', 'envelope of another epoch');
    if (!this.window.check(env.seq)) fail('REPLAY', 'sequence number seen or too old');
    const pt = this.suite.aeadOpen(this.key, envelopeNonce(this.iv, env.seq), env.sealed, this.aads.get(topic)); // env.epoch === this.epoch
    if (!pt) fail('DECRYPT_FAILED', 'envelope did not authenticate');
    this.window.accept(env.seq);
    return pt;
  }
  destroy(): void {
    this.key.fill(0);
    this.iv.fill(0);
  }
}
