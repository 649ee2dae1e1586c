/**
 * A small MQTT 3.1.1 client for the device: connect, publish QoS 0/1,
 * subscribe, keepalive and reconnect with backoff. Platform services are
 * injected; nothing here touches a global, so the same class runs under XS
 * on an ESP32 and under Node.
 *
 * States (one connection attempt at a time):
 *
 *   idle --start()--> connecting --TCP up, CONNECT sent--> awaiting-connack
 *   awaiting-connack --CONNACK 0--> connected
 *   connecting | awaiting-connack | connected --failure/close--> backoff --timer--> connecting
 *   any --disconnect()--> closed   (also when reconnect is disabled and the connection ends)
 *
 * `credentials()` is called before every connect, so the security layer can
 * mint a fresh one-time password each time. Messages published while not
 * connected are queued (bounded); unacknowledged QoS 1 messages are re-sent
 * with DUP after a reconnect, and `onResend` lets the security layer re-seal
 * a message whose connection (and so whose keys) changed since it was
 * published. QoS 2 is not supported: requesting it is refused, and a QoS 2
 * PUBLISH from the broker is a protocol violation that closes the connection.
 */
import { asMqsecError, fail, MqsecError } from '../core/errors.js';
import type { Clock, Connection, Endpoint, Log, Random, Timer, TimerHandle, Transport } from '../core/platform.js';
import { utf8Encode } from '../core/utf8.js';
import {
  encodeConnect,
  encodeDisconnect,
  encodePingreq,
  encodePuback,
  encodePublish,
  encodeSubscribe,
  encodeUnsubscribe,
} from './generate.js';
import type { ConnackPacket, MqttPacket, PublishPacket, Subscription, Will } from './packets.js';
import { MqttParser } from './stream.js';
import { checkTopicFilter, checkTopicName } from './topic.js';

export type ClientState = 'idle' | 'connecting' | 'awaiting-connack' | 'connected' | 'backoff' | 'closed';

export interface Credentials {
  clientId: string;
  username?: string;
  password?: Uint8Array;
}

/** A message about to be sent again on a later connection than the one it was published on. */
export interface ResendMessage {
  topic: string;
  payload: Uint8Array;
  qos: 0 | 1;
  retain: boolean;
  /** True when it was already sent once (a QoS 1 retransmission, sent with DUP). */
  dup: boolean;
}

export interface MqttClientServices {
  transport: Transport;
  timer: Timer;
  clock: Clock;
  random: Random;
  log: Log;
}

export interface MqttClientOptions {
  endpoint: Endpoint;
  /** Called before every (re)connect. */
  credentials: () => Promise<Credentials>;
  /** Seconds; 0 disables keepalive. Default 60. */
  keepaliveSec?: number;
  /** Largest packet accepted from the broker (and sent to it). Default 16 KiB. */
  maxPacketSize?: number;
  /** Default true. With a clean session, subscriptions are re-sent after every reconnect. */
  cleanSession?: boolean;
  /** Exponential backoff with jitter between attempts; false: do not reconnect. Default 1 s .. 30 s. */
  reconnect?: { minMs: number; maxMs: number } | false;
  /** Limit for credentials + TCP connect + CONNACK. Default 10 s. */
  connectTimeoutMs?: number;
  /** QoS 1 messages awaiting PUBACK at once. Default 8. */
  maxInflight?: number;
  /** Messages waiting to be sent (not in flight); more -> QUEUE_FULL. Default 64. */
  maxQueued?: number;
  will?: Will;
  /**
   * When true, after CONNACK the client sends nothing of its own accord (no
   * re-subscription, retransmission or queued message) until release() is
   * called; only `immediate` publishes go out meanwhile. For a security layer
   * whose session keys are settled after CONNACK (mqsec phase 1: KX2/KX3).
   */
  holdAfterConnect?: boolean;
  onConnect?: (connack: ConnackPacket) => void;
  onMessage?: (packet: PublishPacket) => void;
  onClose?: (error?: MqsecError) => void;
  onError?: (error: MqsecError) => void;
  onResend?: (msg: ResendMessage) => Uint8Array | null;
}

export interface PublishOptions {
  qos?: 0 | 1;
  retain?: boolean;
  /** Send even while the client is held after CONNACK (see holdAfterConnect), ahead of the queue. */
  immediate?: boolean;
}

/** A CONNACK with a non-zero return code. */
export class ConnectionRefusedError extends MqsecError {
  readonly returnCode: number;
  constructor(returnCode: number) {
    super('CONNECTION_REFUSED', `broker refused the connection (return code ${returnCode})`);
    this.returnCode = returnCode;
  }
}

/** Counters for benchmarks and diagnostics. */
export interface ClientStats {
  bytesSent: number;
  bytesReceived: number;
  packetsSent: number;
  packetsReceived: number;
  /** Connections that reached `connected`. */
  connects: number;
}

interface Outgoing {
  topic: string;
  payload: Uint8Array;
  qos: 0 | 1;
  retain: boolean;
  immediate: boolean;
  messageId?: number;
  /** Sent at least once: a retransmission carries DUP. */
  sent: boolean;
  /** Number of the connection that was current when the payload was sealed/handed over. */
  connection: number;
  resolve: () => void;
  reject: (e: MqsecError) => void;
}

interface Operation {
  kind: 'subscribe' | 'unsubscribe';
  messageId: number;
  subscriptions: Subscription[];
  filters: string[];
  /** Number of the connection it was last written on (0: not yet written). */
  sentOn: number;
  /** Absent for the client's own re-subscription after a reconnect. */
  resolve?: (granted: number[]) => void;
  reject?: (e: MqsecError) => void;
}

interface Attempt {
  connection?: Connection;
  parser: MqttParser;
  /** Why the client closed it, reported instead of the transport's view. */
  error?: MqsecError;
}

const noop = () => {};

export class MqttClient {
  onConnect: (connack: ConnackPacket) => void;
  onMessage: (packet: PublishPacket) => void;
  onClose: (error?: MqsecError) => void;
  onError: (error: MqsecError) => void;
  onResend: ((msg: ResendMessage) => Uint8Array | null) | undefined;

  readonly stats: ClientStats = { bytesSent: 0, bytesReceived: 0, packetsSent: 0, packetsReceived: 0, connects: 0 };

  private current: ClientState = 'idle';
  private attempt: Attempt | undefined;
  /** Incremented on every CONNACK accepted; messages remember the one they were published under. */
  private connectionNumber = 0;
  private backoffAttempts = 0;
  private connectTimer: TimerHandle | undefined;
  private backoffTimer: TimerHandle | undefined;
  private keepaliveTimer: TimerHandle | undefined;
  private lastSent = 0;
  private lastReceived = 0;
  private pingOutstanding = false;
  /** Connected, but waiting for release() (holdAfterConnect). */
  private held = false;
  private sessionPresent = false;
  private nextId = 1;
  private readonly queue: Outgoing[] = [];
  private readonly inflight = new Map<number, Outgoing>();
  private readonly operations: Operation[] = [];
  private readonly subscriptions = new Map<string, 0 | 1>();
  private closeWaiters: (() => void)[] = [];

  private readonly keepaliveMs: number;
  private readonly maxPacketSize: number;
  private readonly cleanSession: boolean;
  private readonly reconnect: { minMs: number; maxMs: number } | false;
  private readonly connectTimeoutMs: number;
  private readonly maxInflight: number;
  private readonly maxQueued: number;

  constructor(
    private readonly services: MqttClientServices,
    private readonly options: MqttClientOptions,
  ) {
    const keepaliveSec = options.keepaliveSec ?? 60;
    if (!Number.isInteger(keepaliveSec) || keepaliveSec < 0 || keepaliveSec > 0xffff) fail('MALFORMED', 'keepaliveSec not in 0..65535');
    this.keepaliveMs = keepaliveSec * 1000;
    this.maxPacketSize = options.maxPacketSize ?? 16 * 1024;
    this.cleanSession = options.cleanSession ?? true;
    this.reconnect = options.reconnect === undefined ? { minMs: 1000, maxMs: 30_000 } : options.reconnect;
    if (this.reconnect && !(this.reconnect.minMs > 0 && this.reconnect.maxMs >= this.reconnect.minMs)) {
      fail('MALFORMED', 'reconnect needs 0 < minMs <= maxMs');
    }
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.maxInflight = Math.max(1, options.maxInflight ?? 8);
    this.maxQueued = Math.max(0, options.maxQueued ?? 64);
    this.onConnect = options.onConnect ?? noop;
    this.onMessage = options.onMessage ?? noop;
    this.onClose = options.onClose ?? noop;
    this.onError = options.onError ?? noop;
    this.onResend = options.onResend;
  }

  get state(): ClientState {
    return this.current;
  }

  /** QoS 1 messages sent and not yet acknowledged. */
  get inflightCount(): number {
    return this.inflight.size;
  }

  /** Messages waiting to be sent. */
  get queuedCount(): number {
    return this.queue.length;
  }

  /** Starts connecting (once); later connects happen by themselves. */
  start(): void {
    if (this.current !== 'idle') return;
    this.connect();
  }

  publish(topic: string, payload: Uint8Array, opts: PublishOptions = {}): Promise<void> {
    const qos = opts.qos ?? 0;
    try {
      if (this.current === 'closed') fail('NOT_CONNECTED', 'client is closed');
      if (qos !== 0 && qos !== 1) fail('PROTOCOL_VIOLATION', `QoS ${qos} not supported (0 or 1)`);
      checkTopicName(topic);
      if (!(payload instanceof Uint8Array)) fail('MALFORMED', 'payload must be a Uint8Array');
      // Fixed header (<= 5) + topic length (2) + packet id (2) + topic + payload.
      const size = 9 + utf8Encode(topic).length + payload.length;
      if (size > this.maxPacketSize) fail('OVERSIZE', `PUBLISH of ${size} bytes exceeds ${this.maxPacketSize}`);
      // Immediate messages (the security layer's own, few and essential) are not bounded by maxQueued.
      if (!opts.immediate && this.queue.length >= this.maxQueued && !this.canSendNow(qos)) {
        fail('QUEUE_FULL', `${this.queue.length} messages queued`);
      }
    } catch (e) {
      return Promise.reject(asMqsecError(e));
    }
    return new Promise<void>((resolve, reject) => {
      const immediate = opts.immediate ?? false;
      const m: Outgoing = { topic, payload, qos, retain: opts.retain ?? false, immediate, sent: false, connection: this.connectionNumber, resolve, reject };
      this.queue.push(m);
      this.guard(() => this.pump());
    });
  }

  /** Subscribes; resolves with the granted QoS per filter (0x80 = refused). */
  subscribe(filter: string | string[], qos: 0 | 1 = 0): Promise<number[]> {
    const filters = typeof filter === 'string' ? [filter] : filter;
    try {
      if (this.current === 'closed') fail('NOT_CONNECTED', 'client is closed');
      if (qos !== 0 && qos !== 1) fail('PROTOCOL_VIOLATION', `QoS ${qos} not supported (0 or 1)`);
      if (filters.length === 0) fail('PROTOCOL_VIOLATION', 'no topic filters');
      for (const f of filters) checkTopicFilter(f);
    } catch (e) {
      return Promise.reject(asMqsecError(e));
    }
    for (const f of filters) this.subscriptions.set(f, qos);
    return new Promise<number[]>((resolve, reject) => {
      const subscriptions = filters.map((topic) => ({ topic, qos }));
      this.startOperation({ kind: 'subscribe', messageId: 0, subscriptions, filters, sentOn: 0, resolve, reject });
    });
  }

  unsubscribe(filter: string | string[]): Promise<void> {
    const filters = typeof filter === 'string' ? [filter] : filter;
    try {
      if (this.current === 'closed') fail('NOT_CONNECTED', 'client is closed');
      if (filters.length === 0) fail('PROTOCOL_VIOLATION', 'no topic filters');
      for (const f of filters) checkTopicFilter(f);
    } catch (e) {
      return Promise.reject(asMqsecError(e));
    }
    for (const f of filters) this.subscriptions.delete(f);
    return new Promise<void>((resolve, reject) => {
      this.startOperation({ kind: 'unsubscribe', messageId: 0, subscriptions: [], filters, sentOn: 0, resolve: () => resolve(), reject });
    });
  }

  /**
   * Sends DISCONNECT (when connected), closes, and stops reconnecting.
   * Messages not yet acknowledged are rejected with CONNECTION_CLOSED.
   */
  disconnect(): Promise<void> {
    if (this.current === 'closed' && this.attempt === undefined) return Promise.resolve();
    const wasConnected = this.current === 'connected';
    this.setState('closed');
    this.clearTimers();
    this.failPending(new MqsecError('CONNECTION_CLOSED', 'client disconnected'));
    const attempt = this.attempt;
    if (attempt === undefined || attempt.connection === undefined) {
      this.attempt = undefined;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      this.closeWaiters.push(resolve);
      if (wasConnected) this.write(encodeDisconnect());
      // The transport promises onClose; do not hang on a broken one. Armed before close(),
      // which may report the close synchronously (finishClose then clears this timer).
      this.connectTimer = this.services.timer.set(() => this.finishClose(attempt), this.connectTimeoutMs);
      attempt.connection!.close();
    });
  }

  // --- connection lifecycle -------------------------------------------------------------

  private connect(): void {
    const attempt: Attempt = { parser: new MqttParser({ maxPacketSize: this.maxPacketSize }) };
    this.attempt = attempt;
    this.setState('connecting');
    this.connectTimer = this.services.timer.set(() => {
      this.connectTimer = undefined;
      this.abort(attempt, new MqsecError('TIMEOUT', `no CONNACK within ${this.connectTimeoutMs} ms`));
    }, this.connectTimeoutMs);
    let credentials: Promise<Credentials>;
    try {
      credentials = this.options.credentials();
    } catch (e) {
      credentials = Promise.reject(e);
    }
    credentials.then(
      (c) => this.guard(() => this.open(attempt, c)),
      (e) => this.guard(() => this.abort(attempt, asMqsecError(e))),
    );
  }

  private open(attempt: Attempt, credentials: Credentials): void {
    if (this.attempt !== attempt) return;
    const connect = encodeConnect({
      type: 'connect',
      clientId: credentials.clientId,
      cleanSession: this.cleanSession,
      keepalive: this.keepaliveMs / 1000,
      ...(credentials.username !== undefined ? { username: credentials.username } : {}),
      ...(credentials.password !== undefined ? { password: credentials.password } : {}),
      ...(this.options.will ? { will: this.options.will } : {}),
    });
    attempt.connection = this.services.transport.connect(this.options.endpoint, {
      onConnect: () =>
        this.guard(() => {
          if (this.attempt !== attempt) return;
          this.setState('awaiting-connack');
          this.lastReceived = this.services.clock.now();
          this.write(connect);
        }),
      onData: (chunk) => this.guard(() => this.receive(attempt, chunk), attempt),
      onClose: (error) => this.guard(() => this.closed(attempt, error)),
    });
  }

  /** Ends an attempt because of `error`: report it, close, and let closed() back off. */
  private abort(attempt: Attempt, error: MqsecError): void {
    if (this.attempt !== attempt) return;
    this.report(error);
    if (attempt.connection) {
      attempt.error ??= error;
      attempt.connection.close();
    } else {
      // No transport yet (credentials failed or timed out): nothing will call closed().
      this.afterClose(attempt);
    }
  }

  private closed(attempt: Attempt, transportError?: MqsecError): void {
    if (this.attempt !== attempt) return;
    if (this.current === 'closed') {
      this.finishClose(attempt);
      return;
    }
    const error = attempt.error ?? transportError;
    this.services.log.info('mqtt connection closed', error ? { code: error.code, message: error.message } : undefined);
    this.callback(() => this.onClose(error));
    this.afterClose(attempt);
  }

  private afterClose(attempt: Attempt): void {
    if (this.attempt !== attempt) return;
    this.attempt = undefined;
    this.clearTimers();
    if (this.current === 'closed') return;
    if (!this.reconnect) {
      this.setState('closed');
      this.failPending(new MqsecError('CONNECTION_CLOSED', 'connection closed and reconnect is off'));
      return;
    }
    this.setState('backoff');
    const delay = this.backoffDelay();
    this.backoffAttempts++;
    this.backoffTimer = this.services.timer.set(() => {
      this.backoffTimer = undefined;
      this.guard(() => this.connect());
    }, delay);
  }

  private finishClose(attempt: Attempt): void {
    if (this.attempt === attempt) this.attempt = undefined;
    this.clearTimers();
    const waiters = this.closeWaiters;
    this.closeWaiters = [];
    if (waiters.length > 0) this.callback(() => this.onClose(undefined));
    for (const w of waiters) w();
  }

  /** Exponential backoff with "equal jitter": half the delay fixed, half random. */
  private backoffDelay(): number {
    if (!this.reconnect) return 0;
    const { minMs, maxMs } = this.reconnect;
    const base = Math.min(maxMs, minMs * 2 ** Math.min(this.backoffAttempts, 30));
    const r = new Uint8Array(4);
    this.services.random.fill(r);
    const unit = (((r[0] << 24) >>> 0) + (r[1] << 16) + (r[2] << 8) + r[3]) / 0x100000000;
    return Math.round(base / 2 + (base / 2) * unit);
  }

  // --- receiving -------------------------------------------------------------------------

  private receive(attempt: Attempt, chunk: Uint8Array): void {
    // Once aborted, the connection is only waiting for its close: ignore what still arrives.
    if (this.attempt !== attempt || attempt.error !== undefined) return;
    this.stats.bytesReceived += chunk.length;
    this.lastReceived = this.services.clock.now();
    this.pingOutstanding = false;
    try {
      // Packets that precede a malformed one in the same chunk are handled first, then the
      // parser's error ends the attempt: what the app sees does not depend on segmentation.
      attempt.parser.feed(chunk, (p) => {
        if (this.attempt !== attempt || attempt.error !== undefined) return;
        this.stats.packetsReceived++;
        this.handle(attempt, p);
      });
    } catch (e) {
      this.abort(attempt, asMqsecError(e));
    }
  }

  private handle(attempt: Attempt, p: MqttPacket): void {
    if (this.current === 'awaiting-connack') {
      if (p.type !== 'connack') fail('PROTOCOL_VIOLATION', `${p.type} before CONNACK`);
      this.connected(attempt, p);
      return;
    }
    if (this.current !== 'connected') return;
    switch (p.type) {
      case 'publish':
        this.incoming(p);
        return;
      case 'puback': {
        const m = this.inflight.get(p.messageId);
        if (m === undefined) return; // an ack for a message already given up; harmless
        this.inflight.delete(p.messageId);
        m.resolve();
        this.pump();
        return;
      }
      case 'suback':
      case 'unsuback':
        this.acknowledged(p.type, p.messageId, p.type === 'suback' ? p.granted : []);
        return;
      case 'pingresp':
        return;
      default:
        fail('PROTOCOL_VIOLATION', `unexpected ${p.type} from the broker`);
    }
  }

  private connected(attempt: Attempt, connack: ConnackPacket): void {
    if (connack.returnCode !== 0) {
      this.abort(attempt, new ConnectionRefusedError(connack.returnCode));
      return;
    }
    this.clearTimer('connectTimer');
    this.sessionPresent = connack.sessionPresent;
    this.connectionNumber++;
    this.backoffAttempts = 0;
    this.stats.connects++;
    this.setState('connected');
    this.services.log.info('mqtt connected', { sessionPresent: connack.sessionPresent });
    this.armKeepalive();
    this.held = this.options.holdAfterConnect ?? false;
    this.callback(() => this.onConnect(connack));
    if (this.attempt !== attempt || this.current !== 'connected' || this.held) return;
    this.resume(connack.sessionPresent);
  }

  /**
   * Ends the hold after CONNACK (holdAfterConnect): re-subscribes, re-sends
   * unacknowledged messages and flushes the queue. No-op when not held.
   */
  release(): void {
    if (this.current !== 'connected' || !this.held) return;
    this.held = false;
    this.guard(() => this.resume(this.sessionPresent));
  }

  /**
   * Sends what this connection has not carried yet: operations and QoS 1
   * messages written on an earlier connection (lost with it, or unanswered)
   * or not written at all (issued while disconnected or held). Whatever the
   * application already sent on this connection, e.g. a SUBSCRIBE or PUBLISH
   * issued inside onConnect, is not sent twice (a second SUBSCRIBE would
   * bring a second SUBACK and the retained messages again).
   */
  private resume(sessionPresent: boolean): void {
    const unanswered = this.operations.filter((op) => op.sentOn !== this.connectionNumber);
    if (!sessionPresent) this.resubscribe();
    for (const op of unanswered) this.sendOperation(op);
    for (const m of [...this.inflight.values()]) if (m.connection !== this.connectionNumber) this.transmit(m);
    this.pump();
  }

  private incoming(p: PublishPacket): void {
    if (p.qos === 2) fail('PROTOCOL_VIOLATION', 'QoS 2 PUBLISH not supported');
    this.callback(() => this.onMessage(p));
    if (p.qos === 1 && this.current === 'connected') this.write(encodePuback({ type: 'puback', messageId: p.messageId! }));
  }

  private acknowledged(kind: 'suback' | 'unsuback', messageId: number, granted: number[]): void {
    const i = this.operations.findIndex((op) => op.messageId === messageId);
    if (i < 0) return;
    const op = this.operations[i];
    if ((kind === 'suback') !== (op.kind === 'subscribe')) fail('PROTOCOL_VIOLATION', `${kind} for an ${op.kind}`);
    if (kind === 'suback' && granted.length !== op.subscriptions.length) fail('PROTOCOL_VIOLATION', 'SUBACK count mismatch');
    this.operations.splice(i, 1);
    for (let k = 0; k < granted.length; k++) {
      // A refused filter is forgotten, so it is not re-sent after every reconnect.
      if (granted[k] === 0x80 && this.subscriptions.get(op.filters[k]) === op.subscriptions[k].qos) this.subscriptions.delete(op.filters[k]);
    }
    if (op.resolve) op.resolve(granted);
    else if (granted.indexOf(0x80) >= 0) this.report(new MqsecError('NOT_AUTHORIZED', 're-subscription refused by the broker'));
  }

  // --- sending ---------------------------------------------------------------------------

  private canSendNow(qos: 0 | 1): boolean {
    return this.current === 'connected' && !this.held && this.queue.length === 0 && (qos === 0 || this.inflight.size < this.maxInflight);
  }

  /**
   * Sends queued messages in order while connected and the in-flight window
   * allows; while held, only the `immediate` ones.
   */
  private pump(): void {
    let i = 0;
    while (this.current === 'connected' && i < this.queue.length) {
      const m = this.queue[i];
      if (this.held && !m.immediate) {
        i++;
        continue;
      }
      if (m.qos === 1 && this.inflight.size >= this.maxInflight) return;
      this.queue.splice(i, 1);
      if (m.qos === 1) {
        m.messageId = this.allocateId();
        this.inflight.set(m.messageId, m);
      }
      if (!this.transmit(m)) continue;
      if (m.qos === 0) m.resolve();
    }
  }

  /**
   * Writes one PUBLISH, first letting onResend re-seal a message that was
   * handed over under an earlier connection. Returns false if it was dropped.
   */
  private transmit(m: Outgoing): boolean {
    if (m.connection !== this.connectionNumber && this.onResend) {
      let payload: Uint8Array | null;
      try {
        payload = this.onResend({ topic: m.topic, payload: m.payload, qos: m.qos, retain: m.retain, dup: m.sent });
      } catch (e) {
        this.report(asMqsecError(e));
        payload = null;
      }
      if (payload !== null && !(payload instanceof Uint8Array)) {
        this.report(new MqsecError('MALFORMED', 'onResend returned neither a Uint8Array nor null'));
        payload = null;
      }
      if (payload === null) {
        if (m.messageId !== undefined) this.inflight.delete(m.messageId);
        m.reject(new MqsecError('CONNECTION_CLOSED', 'message dropped by onResend after a reconnect'));
        return false;
      }
      m.payload = payload;
    }
    m.connection = this.connectionNumber;
    const bytes = encodePublish({
      type: 'publish',
      topic: m.topic,
      payload: m.payload,
      qos: m.qos,
      dup: m.sent && m.qos === 1,
      retain: m.retain,
      ...(m.qos === 1 ? { messageId: m.messageId } : {}),
    });
    m.sent = true;
    this.write(bytes);
    return true;
  }

  private startOperation(op: Operation): void {
    op.messageId = this.allocateId();
    this.operations.push(op);
    if (this.current === 'connected' && !this.held) this.guard(() => this.sendOperation(op));
  }

  private sendOperation(op: Operation): void {
    op.sentOn = this.connectionNumber;
    this.write(
      op.kind === 'subscribe'
        ? encodeSubscribe({ type: 'subscribe', messageId: op.messageId, subscriptions: op.subscriptions })
        : encodeUnsubscribe({ type: 'unsubscribe', messageId: op.messageId, unsubscriptions: op.filters }),
    );
  }

  /** After a reconnect without a stored session, subscribe again to every filter not already pending. */
  private resubscribe(): void {
    const pending = new Set<string>();
    for (const op of this.operations) if (op.kind === 'subscribe') for (const f of op.filters) pending.add(f);
    const filters = [...this.subscriptions.keys()].filter((f) => !pending.has(f));
    // A few filters per packet keeps each SUBSCRIBE well under any packet size limit.
    for (let i = 0; i < filters.length; i += 8) {
      const chunk = filters.slice(i, i + 8);
      const subscriptions = chunk.map((topic) => ({ topic, qos: this.subscriptions.get(topic)! }));
      const op: Operation = { kind: 'subscribe', messageId: this.allocateId(), subscriptions, filters: chunk, sentOn: 0 };
      this.operations.push(op);
      this.sendOperation(op);
    }
  }

  private allocateId(): number {
    for (let n = 0; n < 0xffff; n++) {
      const id = this.nextId;
      this.nextId = id === 0xffff ? 1 : id + 1;
      if (!this.inflight.has(id) && !this.operations.some((op) => op.messageId === id)) return id;
    }
    return fail('QUEUE_FULL', 'no free packet identifier');
  }

  private write(bytes: Uint8Array): void {
    const connection = this.attempt?.connection;
    if (!connection) return;
    this.stats.bytesSent += bytes.length;
    this.stats.packetsSent++;
    this.lastSent = this.services.clock.now();
    connection.write(bytes);
  }

  // --- keepalive -------------------------------------------------------------------------

  /**
   * One timer, set for the next deadline: send PINGREQ after keepalive with
   * nothing sent (the broker needs traffic) or nothing received (to provoke
   * an answer); declare the broker dead after 1.5 x keepalive of silence.
   */
  private armKeepalive(): void {
    this.clearTimer('keepaliveTimer');
    if (this.keepaliveMs === 0 || this.current !== 'connected') return;
    const k = this.keepaliveMs;
    const deadAt = this.lastReceived + 1.5 * k;
    const pingAt = this.pingOutstanding ? this.lastSent + k : Math.min(this.lastSent + k, this.lastReceived + k);
    const wait = Math.max(1, Math.min(deadAt, pingAt) - this.services.clock.now());
    this.keepaliveTimer = this.services.timer.set(() => {
      this.keepaliveTimer = undefined;
      this.guard(() => this.keepaliveTick());
    }, wait);
  }

  private keepaliveTick(): void {
    const attempt = this.attempt;
    if (this.current !== 'connected' || attempt === undefined || attempt.error !== undefined) return;
    const now = this.services.clock.now();
    const k = this.keepaliveMs;
    if (now - this.lastReceived >= 1.5 * k) {
      this.abort(attempt, new MqsecError('TIMEOUT', `nothing from the broker for ${now - this.lastReceived} ms`));
      return;
    }
    if (now - this.lastSent >= k || (!this.pingOutstanding && now - this.lastReceived >= k)) {
      this.pingOutstanding = true;
      this.write(encodePingreq());
    }
    this.armKeepalive();
  }

  // --- helpers ---------------------------------------------------------------------------

  private setState(s: ClientState): void {
    if (this.current === s) return;
    this.services.log.debug('mqtt state', { from: this.current, to: s });
    this.current = s;
  }

  private clearTimer(name: 'connectTimer' | 'backoffTimer' | 'keepaliveTimer'): void {
    const h = this[name];
    if (h !== undefined) this.services.timer.clear(h);
    this[name] = undefined;
  }

  private clearTimers(): void {
    this.clearTimer('connectTimer');
    this.clearTimer('backoffTimer');
    this.clearTimer('keepaliveTimer');
  }

  private failPending(error: MqsecError): void {
    const queued = this.queue.splice(0);
    const inflight = [...this.inflight.values()];
    this.inflight.clear();
    const ops = this.operations.splice(0);
    for (const m of [...inflight, ...queued]) m.reject(error);
    for (const op of ops) op.reject?.(error);
  }

  private report(error: MqsecError): void {
    this.services.log.warn('mqtt error', { code: error.code, message: error.message });
    this.callback(() => this.onError(error));
  }

  /** Runs an application callback; what it throws is logged, never propagated. */
  private callback(f: () => void): void {
    try {
      f();
    } catch (e) {
      this.services.log.error('mqtt callback threw', { message: asMqsecError(e).message });
    }
  }

  /**
   * Runs client work from a transport or timer callback: nothing is thrown
   * back into the transport; an error ends the current attempt instead.
   */
  private guard(f: () => void, attempt: Attempt | undefined = this.attempt): void {
    try {
      f();
    } catch (e) {
      const error = asMqsecError(e);
      if (attempt !== undefined && this.attempt === attempt) this.abort(attempt, error);
      else this.report(error);
    }
  }
}
