/**
 * QoS 1 messages the broker has not acknowledged yet, kept across
 * connections of one power-on.
 *
 * SecureMqttLink builds a fresh MQTT client for every connection, so the
 * client's own in-flight window dies with the connection. Without this, a
 * reading whose PUBACK was lost to a Wi-Fi drop would be silently abandoned.
 * The outbox keeps the *sealed envelope*: after the next connection is
 * ready it is resent as is while the broker still holds the previous
 * epoch's receive keys (docs/protocol.md, "QoS 1 across a key change"), so
 * the broker's replay window recognises a copy that did arrive, and the
 * backend sees no duplicate; otherwise the session re-seals it under the
 * new keys. An end-to-end message (docs/protocol.md §14.5) keeps its group
 * envelope and gets the new connection's channel trailer. Bounded: an ESP32
 * cannot queue forever.
 */
import type { Log } from '../core/platform.js';
import { silentLog } from '../core/platform.js';

export interface OutboxPublisher {
  publish(topic: string, payload: Uint8Array, opts: { qos?: 0 | 1; retain?: boolean; immediate?: boolean }): Promise<void>;
}

export interface OutboxPublishOptions {
  qos?: 0 | 1;
  retain?: boolean;
  immediate?: boolean;
  /** A group envelope with a channel trailer (§14.5): on resend it keeps the envelope and gets a new trailer. */
  e2e?: boolean;
  /** For e2e: the plaintext, to seal afresh if the envelope's epoch is gone before the PUBACK. */
  plaintext?: Uint8Array;
}

interface Entry {
  topic: string;
  envelope: Uint8Array;
  retain: boolean;
  e2e: boolean;
  plaintext: Uint8Array | undefined;
  /** The connection (link generation) this copy was last sent on. */
  sentOn: number;
  /** Connections it went out on without a PUBACK coming back. */
  attempts: number;
}

/**
 * Connections a message may be tried on. Bounded so that an envelope the
 * broker keeps refusing (it closes the connection on an epoch it cannot open)
 * can never hold a node in a reconnect loop.
 */
export const OUTBOX_MAX_ATTEMPTS = 4;

export class Outbox {
  private readonly entries: Entry[] = [];
  private waiters: (() => void)[] = [];
  dropped = 0;

  constructor(
    readonly capacity = 16,
    private readonly log: Log = silentLog,
  ) {}

  get size(): number {
    return this.entries.length;
  }

  /**
   * Publishes through `client` on connection `generation`, remembering QoS 1
   * application messages until their PUBACK.
   */
  async publish(
    client: OutboxPublisher,
    generation: number,
    topic: string,
    payload: Uint8Array,
    opts: OutboxPublishOptions,
  ): Promise<void> {
    const mqttOpts = { qos: opts.qos, retain: opts.retain, immediate: opts.immediate };
    if (opts.qos !== 1 || opts.immediate || topic.startsWith('$mqsec/')) return client.publish(topic, payload, mqttOpts);
    const entry: Entry = { topic, envelope: payload, retain: opts.retain ?? false, e2e: opts.e2e ?? false, plaintext: opts.plaintext, sentOn: generation, attempts: 1 };
    this.add(entry);
    await client.publish(topic, payload, mqttOpts);
    this.remove(entry);
  }

  /**
   * After a new connection is ready: sends every message left over from
   * earlier connections. `reseal` returns a fresh envelope when the old one
   * can no longer be accepted (always, for an end-to-end message: a new
   * trailer), or null to send it as is; it throws when the message cannot be
   * recovered (dropped and counted).
   */
  resend(client: OutboxPublisher, generation: number, reseal: (topic: string, envelope: Uint8Array, e2e: boolean, plaintext?: Uint8Array) => Uint8Array | null): void {
    for (const entry of [...this.entries]) {
      if (entry.sentOn === generation) continue;
      if (entry.attempts >= OUTBOX_MAX_ATTEMPTS) {
        this.log.warn('outbox: message unacknowledged after every attempt, dropped', { topic: entry.topic });
        this.remove(entry);
        this.dropped++;
        continue;
      }
      entry.sentOn = generation;
      entry.attempts++;
      let fresh: Uint8Array | null = null;
      try {
        fresh = reseal(entry.topic, entry.envelope, entry.e2e, entry.plaintext);
      } catch (e) {
        this.log.warn('outbox: cannot re-seal, dropping message', { topic: entry.topic });
        this.remove(entry);
        this.dropped++;
        continue;
      }
      if (fresh) entry.envelope = fresh;
      client.publish(entry.topic, entry.envelope, { qos: 1, retain: entry.retain }).then(
        () => this.remove(entry),
        () => {
          // still unacknowledged: the next connection tries again
        },
      );
    }
  }

  /**
   * Resolves once every message is acknowledged, or when `release()` is
   * called (the connection went down): a node about to sleep waits here so
   * it does not power down with readings still unacknowledged.
   */
  whenEmpty(): Promise<void> {
    if (this.entries.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Wakes every whenEmpty() waiter (the connection is gone; nothing more will drain now). */
  release(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private add(entry: Entry): void {
    if (this.entries.length >= this.capacity) {
      this.entries.shift();
      this.dropped++;
      this.log.warn('outbox full: oldest unacknowledged message dropped', { capacity: this.capacity });
    }
    this.entries.push(entry);
  }

  private remove(entry: Entry): void {
    const i = this.entries.indexOf(entry);
    if (i >= 0) this.entries.splice(i, 1);
    if (this.entries.length === 0) this.release();
  }
}
