/**
 * The app's `SecureLink` on a stock broker (docs/protocol.md §15): the
 * sensor node (sensor-node.ts) runs unchanged, and this link does what
 * SecureMqttLink does on the mqsec broker, through a StockConnector.
 *
 *  - open: phase 2 on the kept ticket, or phase 1 over PUBLISH first
 *    (§15.2, §15.3), then the group keys (§14.6); the link is up once they
 *    arrived.
 *  - publish: readings are sealed under their topic's group key (§14.4); a
 *    stock broker carries every device topic end to end, and there is no
 *    channel trailer (§15.1). QoS 1 envelopes stay in the outbox until their
 *    PUBACK and are sent again on the next connection of the same power-on:
 *    as they are while their epoch is current or previous (a copy that did
 *    arrive is dropped by the readers' replay windows), re-sealed from the
 *    kept plaintext otherwise. A reading handed over while no connection had
 *    keys is kept as plaintext and sealed once one has.
 *  - a used-up sequence range (NONCE_EXHAUSTED) keeps the reading and ends
 *    the connection, the next one brings a new range; at three quarters used
 *    the next range is asked for on the same connection.
 *  - messages: commands on `cmd/<id>/...` are opened with the group checks of
 *    §14.7; a command on a topic without a group key is dropped (a stock
 *    broker cannot seal hop by hop, so commands are end to end only).
 */
import { MqsecError, asMqsecError } from '../core/errors.js';
import type { Log, Timer } from '../core/platform.js';
import { silentLog } from '../core/platform.js';
import type { DeviceSecureSession } from '../secure/device.js';
import type { GroupKeyring } from '../secure/group.js';
import { Outbox, type OutboxPublisher } from './outbox.js';
import type { SecureLink, SecureLinkEvents, SecureLinkOpened } from './ports.js';
import { StockConnector, type OpenStockLink } from './stock-connector.js';

export interface StockSecureLinkOptions {
  id: string;
  session: DeviceSecureSession;
  keyring: GroupKeyring;
  /** bootPassword(K_auth, id) (§15.2), computed once at start-up. */
  bootPassword: string;
  open: OpenStockLink;
  timer: Timer;
  log?: Log;
  /** Wait for KX2 / RC / the key delivery. Default 5 s. */
  timeoutMs?: number;
  /** Unacknowledged QoS 1 readings kept for the next connection (default 16). */
  outboxCapacity?: number;
  /** A connection is usable (keys in place): phase 1 if it needed a bootstrap first. */
  onReady?(phase: 1 | 2): void;
  /** A message refused by the receiver checks (or held too long before the keys came). */
  onDropped?(topic: string, e: MqsecError): void;
}

export class StockSecureLink implements SecureLink {
  private readonly connector: StockConnector;
  private readonly log: Log;
  private events: SecureLinkEvents | undefined;
  /** Bumped on every open/close so callbacks of an older connection are ignored. */
  private generation = 0;
  private up = false;
  /** A connect under way. */
  private connecting: Promise<unknown> | undefined;
  readonly outbox: Outbox;
  /** QoS 1 readings handed over while no connection had keys: sealed once one has. */
  private unsealed: { topic: string; payload: Uint8Array }[] = [];

  constructor(private readonly o: StockSecureLinkOptions) {
    this.log = o.log ?? silentLog;
    this.outbox = new Outbox(o.outboxCapacity ?? 16, this.log);
    this.connector = new StockConnector({
      id: o.id,
      session: o.session,
      keyring: o.keyring,
      bootPassword: o.bootPassword,
      open: o.open,
      timer: o.timer,
      timeoutMs: o.timeoutMs,
      // also before open() returns: a command the session queued is opened as soon as the keys arrive
      onMessage: (m) => this.events?.onMessage(m.topic, m.plaintext),
      onDropped: (topic, e) => {
        this.log.warn('message dropped', { topic, code: e.code });
        o.onDropped?.(topic, e);
      },
      onDown: () => this.down(),
    });
  }

  async open(events: SecureLinkEvents): Promise<SecureLinkOpened> {
    const gen = ++this.generation;
    this.up = false;
    this.events = events;
    // one connect at a time on the session: one the caller gave up on (its timeout) is ended first
    if (this.connecting) {
      await this.connector.close();
      await this.connecting.catch(() => undefined);
    }
    const connecting = this.connector.connect();
    this.connecting = connecting;
    let r: Awaited<typeof connecting>;
    try {
      r = await connecting;
    } finally {
      if (this.connecting === connecting) this.connecting = undefined;
    }
    if (gen !== this.generation) {
      await this.connector.close();
      throw new MqsecError('CONNECTION_CLOSED', 'link closed while connecting');
    }
    const phase = r.phase1 ? 1 : 2;
    this.up = true;
    // readings left unacknowledged by earlier connections go out first, then those never sealed
    this.outbox.resend(this.publisher(gen), gen, (topic, envelope, _e2e, plaintext) => this.resendPayload(topic, envelope, plaintext));
    for (const m of this.unsealed.splice(0)) this.publish(m.topic, m.payload, 1).catch(() => {}); // now in the outbox
    this.o.onReady?.(phase);
    return { phase };
  }

  private publisher(gen: number): OutboxPublisher {
    const link = this.connector.current;
    return {
      publish: (topic, payload, opts) => {
        if (!link || gen !== this.generation) return Promise.reject(new MqsecError('NOT_CONNECTED', 'connection gone'));
        return link.publish(topic, payload, opts.qos ?? 0);
      },
    };
  }

  /** §14.5 without a trailer: the kept envelope as is while readers can open it, else sealed afresh. */
  private resendPayload(topic: string, envelope: Uint8Array, plaintext?: Uint8Array): Uint8Array | null {
    const pt = this.o.keyring.reopenOwn(topic, envelope);
    if (pt) {
      pt.fill(0);
      return null;
    }
    if (!plaintext) throw new MqsecError('UNKNOWN_SESSION', 'group epoch of the queued reading is gone');
    return this.o.keyring.seal(topic, plaintext);
  }

  async publish(topic: string, payload: Uint8Array, qos: 0 | 1 = 1): Promise<void> {
    if (!this.up || !this.connector.current) {
      // no keys right now (the connection just died): a QoS 1 reading waits as plaintext
      if (qos === 1) this.keepUnsealed(topic, payload);
      throw new MqsecError('NOT_CONNECTED', 'secure link is not open');
    }
    const kr = this.o.keyring;
    let envelope: Uint8Array;
    try {
      envelope = kr.seal(topic, payload);
    } catch (e) {
      const err = asMqsecError(e);
      if (err.code === 'NONCE_EXHAUSTED') {
        // §14.4: nothing was sent; a new connection brings a new range: keep the reading, end this one
        if (qos === 1) this.keepUnsealed(topic, payload);
        this.log.warn('sequence range used up: reconnecting');
        void this.connector.current?.close().catch(() => {});
      }
      throw err;
    }
    // §14.4: three quarters of the range used: ask for the next one on this connection
    if (kr.wantsRange) this.connector.requestKeys().catch(() => {});
    await this.outbox.publish(this.publisher(this.generation), this.generation, topic, envelope, { qos, e2e: true, plaintext: qos === 1 ? payload.slice() : undefined });
  }

  private keepUnsealed(topic: string, payload: Uint8Array): void {
    if (this.unsealed.length >= this.outbox.capacity) {
      this.unsealed.shift();
      this.outbox.dropped++;
      this.log.warn('unsent queue full: oldest reading dropped');
    }
    this.unsealed.push({ topic, payload: payload.slice() });
  }

  async subscribe(filter: string): Promise<void> {
    if (!this.up) throw new MqsecError('NOT_CONNECTED', 'secure link is not open');
    // the broker answers 0x80 for a filter the policy does not grant (§15.6): nothing arrives there
    const granted = (await this.connector.subscribe(filter, 1)) as number[] | undefined;
    if (granted && granted[0] === 0x80) this.log.warn('subscription refused by the broker', { filter });
  }

  unacknowledged(): number {
    return this.outbox.size + this.unsealed.length;
  }

  private down(): void {
    if (!this.up) return;
    this.up = false;
    this.outbox.release();
    this.events?.onDown(new MqsecError('CONNECTION_CLOSED', 'connection lost'));
  }

  async close(): Promise<void> {
    // going to sleep: unacknowledged readings drain first (RAM does not survive deep sleep)
    if (this.up) await this.outbox.whenEmpty();
    this.generation++;
    this.up = false;
    this.events = undefined;
    this.outbox.release();
    await this.connector.close().catch(() => {});
  }
}
