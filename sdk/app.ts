/**
 * The app SDK: a backend joins as an mqsec principal (not a password
 * account) on an unmodified MQTT.js client. It runs phase 1, then phase 2 on
 * later connects, with its app key (docs/protocol.md §5, §6), asks the key
 * service for its group keys after every CONNACK (§14.6) and applies the
 * pushes that follow, and hands the application plaintext `message` events;
 * `publish` seals end to end (§14.4, with this connection's channel trailer,
 * §14.5) on topics of a group it writes, hop by hop (§8) elsewhere.
 *
 *   import { connectApp } from 'mqsec';
 *   const app = await connectApp({ url: 'mqtt://127.0.0.1:1883', id: 'backend', key: '<hex from mqsec app add>' });
 *   app.on('message', (topic, payload, info) => ...);   // info.mode 'e2e' | 'hop', info.publisher
 *   app.on('dropped', (topic, err) => ...);             // err.code: REPLAY, DECRYPT_FAILED, ...
 *   await app.subscribe('sensors/#');
 *   await app.publish('cmd/dev1/interval', '30', { qos: 1 });   // resolves at PUBACK
 *   await app.end();
 *
 * Connection life (a small state machine, `app.state`):
 *   connecting -> online -> offline -> connecting -> online ... -> closed
 * A lost connection is re-established with exponential backoff and jitter;
 * every attempt takes fresh credentials from the session (a one-time
 * password is never replayed, which is why MQTT.js's own reconnect is off and
 * each connection gets a fresh MQTT.js client). Subscriptions are made again.
 * QoS 1 messages not acknowledged are sent again once the new connection
 * holds its keys: an end-to-end message keeps its group envelope and gets
 * this connection's channel trailer (§14.5: receivers drop the copy if the
 * first one had arrived); a hop-by-hop one follows §8.5.
 *
 * The same app runs on a stock broker with the mqsec key service beside it
 * (`flavour: 'stock'`, §15): what differs (phase 1 on a bootstrap
 * connection, the token as a text password on a persistent session, the
 * protocol on `mqsec/up|down/ID`, no trailer, no hop-by-hop topics) is the
 * transport (transport.ts); this state machine is the same.
 */
import { EventEmitter } from 'node:events';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { fromHex } from '../firmware/core/bytes.js';
import { MqsecError, asMqsecError, fail } from '../firmware/core/errors.js';
import { MemoryStorage } from '../firmware/core/memory-storage.js';
import type { Storage } from '../firmware/core/platform.js';
import type { CryptoSuite } from '../firmware/crypto/suite.js';
import { DeviceSecureSession } from '../firmware/secure/device.js';
import { MSG_RESUME_CONFIRM, RESERVED_PREFIX } from '../firmware/secure/constants.js';
import { GK_TOPIC, GroupKeyring, deriveKeyServiceKey } from '../firmware/secure/group.js';
import { deriveDeviceKeys } from '../firmware/secure/key-schedule.js';
import { bootPassword } from '../firmware/secure/stock.js';
import { createNodeCryptoSuite } from '../platform-node/crypto-suite.js';
import { StockTransport, mqsecTransport, type BrokerFlavour, type BrokerTransport } from './transport.js';

export interface ReconnectOptions {
  /** First delay after a lost connection. Default 250 ms. */
  initialMs?: number;
  /** Delays double up to this. Default 30 s. */
  maxMs?: number;
}

export interface ConnectAppOptions {
  /** mqtt://host:port of the broker. */
  url: string;
  /**
   * Which broker `url` is (docs/protocol.md §15.1): `"mqsec"` (default), the
   * mqsec broker; `"stock"`, an unmodified broker (Mosquitto with dynamic
   * security, RabbitMQ, ...) with `mqsec keyservice --flavour ...` beside it.
   * On a stock broker every topic the app reads or writes must be end to end
   * (inside a group of its policy): there is no hop-by-hop mode, and the MQTT
   * session is always persistent (§15.3).
   */
  flavour?: BrokerFlavour;
  /** The app principal's id (its MQTT client id). */
  id: string;
  /** Its 32-byte key, as bytes or hex (printed once by `mqsec app add`). The SDK wipes its own copy at once. */
  key: Uint8Array | string;
  /**
   * Where the counter and resumption ticket live. Default: in memory (phase 1
   * at every start; the broker's counter hint, §5.5, moves the counter past
   * the last run's). `fileStorage(dir)` keeps them across restarts (phase 2).
   */
  storage?: Storage;
  suite?: CryptoSuite;
  /** Extra MQTT.js options (keepalive, connectTimeout, ...); client id, user name, password, clean and reconnectPeriod are the SDK's. */
  mqtt?: IClientOptions;
  /** How long to wait for the group keys after the session is ready. Default 5 s. */
  keyTimeoutMs?: number;
  /** Reconnect after a lost connection (default on), or `false` for one connection only. */
  reconnect?: ReconnectOptions | false;
  /** Messages waiting to be sent or acknowledged before `publish` refuses with QUEUE_FULL. Default 10,000. */
  maxQueued?: number;
  /**
   * Keep the MQTT session across connections (clean session off, client id =
   * the app id): QoS 1 messages routed while the app is reconnecting, e.g.
   * across a broker restart, are queued for it by the broker and delivered
   * when it is back. Default off (a clean session per connection); always on
   * with `flavour: "stock"`.
   */
  persistent?: boolean;
}

export type AppState = 'connecting' | 'online' | 'offline' | 'closed';

export interface MessageInfo {
  mode: 'e2e' | 'hop';
  /** For e2e: the writer's principal id as the key service lists it. */
  publisher?: string;
  group?: string;
  epoch?: number;
  retain: boolean;
}

export interface OnlineInfo {
  /** 1: full handshake, 2: resumption. */
  phase: 1 | 2;
  /** How many connections this app has made (1 for the first). */
  connection: number;
}

export interface AppEvents {
  message: [topic: string, payload: Buffer, info: MessageInfo];
  /**
   * A message or key delivery that failed a receiver check (typed code:
   * REPLAY, DECRYPT_FAILED, UNKNOWN_SESSION, NOT_AUTHORIZED, MALFORMED,
   * TRUNCATED, BAD_MAC, ...). Nothing of it reaches `message`.
   */
  dropped: [topic: string, error: MqsecError];
  /** Group keys arrived or changed (filters). */
  keys: [filters: string[]];
  /** Ready: authenticated, holding the current group keys, and (on a reconnect) its subscriptions acknowledged by the broker. */
  online: [info: OnlineInfo];
  /** The connection was lost; a reconnect is scheduled. */
  offline: [error: MqsecError];
  /** Closed for good: `end()`, or a refusal no retry can fix (revoked, unknown key). */
  close: [error?: MqsecError];
}

interface Outgoing {
  topic: string;
  plaintext: Uint8Array;
  qos: 0 | 1;
  retain: boolean;
  /** What was sealed the first time: the group envelope (e2e) or the §8 envelope (hop). */
  sealed?: Uint8Array;
  mode?: 'e2e' | 'hop';
  /** Number of the connection it was last written to (0 = never written). */
  sentOn: number;
  resolve(): void;
  reject(e: MqsecError): void;
}

const DEFAULT_KEY_TIMEOUT_MS = 5000;
const DEFAULT_MAX_QUEUED = 10_000;
/** Asking the key service again on an unknown epoch: at most this often. */
/** First gap before a connection's unanswered key request is made again (then 2x, 4x, ... until the key timeout). */
const KEY_RETRY_FIRST_MS = 500;
const KEY_REQUEST_MIN_INTERVAL_MS = 1000;
/** Counter hints and phase-2 fallbacks reconnect at once, but not forever. */
const MAX_IMMEDIATE_RETRIES = 3;
/** Envelopes held for a key delivery (an epoch not known yet). */
const MAX_HELD = 256;

/** Refusals that mean the key or the principal is no good (unknown, revoked): retrying cannot help. */
function isFatalRefusal(code: number): boolean {
  return code === 4 || code === 5;
}

export class MqsecApp extends EventEmitter<AppEvents> {
  private _state: AppState = 'connecting';
  private _client: MqttClient | undefined;
  private connNo = 0;
  private chain: Promise<void> = Promise.resolve();
  private readonly queue: Outgoing[] = [];
  private readonly subscriptions = new Map<string, 0 | 1>();
  /** The connection whose goOnline() is under way or done (it runs once per connection). */
  private goingOnline = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private keyTimer: ReturnType<typeof setTimeout> | undefined;
  /** Key requests of this connection made again before their answer came (their answers no longer open). */
  private supersededRequests = 0;
  private backoffMs = 0;
  private immediateRetries = 0;
  private lastKeyRequest = 0;
  private phaseOfAttempt: 1 | 2 = 1;
  /** The group sequence range ran out (§14.4): sending waits for the next key delivery. */
  private waitingRange = false;
  /** Group envelopes waiting for their epoch's key (openGroupMessage). */
  private held: { topic: string; payload: Uint8Array; retain: boolean }[] = [];
  private heldTimer: ReturnType<typeof setTimeout> | undefined;
  /** The broker answered this attempt's KX1 with a counter hint (§5.5): reconnect at once. */
  private counterHinted = false;
  /** Settles the first connect (connectApp). */
  private firstConnect: { resolve(): void; reject(e: MqsecError): void } | undefined;
  private readonly url: string;
  private readonly mqttOptions: IClientOptions;
  private readonly keyTimeoutMs: number;
  private readonly reconnectOpts: Required<ReconnectOptions> | false;
  private readonly maxQueued: number;
  private readonly persistent: boolean;
  private readonly transport: BrokerTransport;
  /** Phase of the main connection's credentials (2 after a bootstrap phase 1, §15.2): what a refusal means. */
  private connPhase: 1 | 2 = 1;

  /** @internal use connectApp */
  constructor(
    readonly session: DeviceSecureSession,
    readonly keyring: GroupKeyring,
    opts: Pick<ConnectAppOptions, 'url' | 'mqtt' | 'keyTimeoutMs' | 'reconnect' | 'maxQueued' | 'persistent'> & { transport?: BrokerTransport },
  ) {
    super();
    this.url = opts.url;
    this.mqttOptions = opts.mqtt ?? {};
    this.keyTimeoutMs = opts.keyTimeoutMs ?? DEFAULT_KEY_TIMEOUT_MS;
    this.reconnectOpts = opts.reconnect === false ? false : { initialMs: opts.reconnect?.initialMs ?? 250, maxMs: opts.reconnect?.maxMs ?? 30_000 };
    this.maxQueued = opts.maxQueued ?? DEFAULT_MAX_QUEUED;
    this.transport = opts.transport ?? mqsecTransport;
    this.persistent = this.transport.flavour === 'stock' || (opts.persistent ?? false);
  }

  /** Phase of the last connection attempt (1 when it ran a full handshake, also on a stock broker's bootstrap login). */
  get phase(): 1 | 2 {
    return this.phaseOfAttempt;
  }

  /** The broker flavour this app talks to (§15.1). */
  get flavour(): BrokerFlavour {
    return this.transport.flavour;
  }

  get id(): string {
    return this.session.devId;
  }

  get state(): AppState {
    return this._state;
  }

  /** The MQTT.js client of the current connection (a new one after every reconnect). */
  get client(): MqttClient {
    if (!this._client) fail('NOT_CONNECTED', 'no connection yet');
    return this._client;
  }

  /** Messages handed to `publish` and not yet written (QoS 0) or acknowledged (QoS 1). */
  get pending(): number {
    return this.queue.length;
  }

  /**
   * Seals and publishes: end to end on a group this app writes, hop by hop
   * elsewhere. Resolves when written (QoS 0) or acknowledged by the broker
   * (QoS 1, default), across reconnects; rejects with a typed MqsecError
   * (NOT_AUTHORIZED, QUEUE_FULL, CONNECTION_CLOSED, ...).
   */
  publish(topic: string, payload: Uint8Array | string, opts: { qos?: 0 | 1; retain?: boolean } = {}): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this._state === 'closed') return reject(new MqsecError('CONNECTION_CLOSED', 'app closed'));
      if (typeof topic !== 'string' || topic.length === 0 || /[+#\u0000]/.test(topic)) return reject(new MqsecError('MALFORMED', 'not a topic name'));
      if (topic.startsWith(RESERVED_PREFIX)) return reject(new MqsecError('NOT_AUTHORIZED', 'reserved topic'));
      if (this.queue.length >= this.maxQueued) return reject(new MqsecError('QUEUE_FULL', `${this.queue.length} messages waiting`));
      const plaintext = typeof payload === 'string' ? new TextEncoder().encode(payload) : payload.slice();
      const qos = opts.qos ?? 1;
      if (qos !== 0 && qos !== 1) return reject(new MqsecError('MALFORMED', 'qos must be 0 or 1'));
      const m: Outgoing = { topic, plaintext, qos, retain: opts.retain ?? false, sentOn: 0, resolve, reject };
      this.queue.push(m);
      if (this._state === 'online') this.send(m);
    });
  }

  /** Subscribes now and after every reconnect. Resolves with the granted QoS (128 = refused). */
  async subscribe(filter: string, qos: 0 | 1 = 1): Promise<number> {
    if (this._state === 'closed') fail('CONNECTION_CLOSED', 'app closed');
    this.subscriptions.set(filter, qos);
    if (this._state !== 'online' || !this._client) return qos; // made at the next connect
    let g;
    try {
      g = await this._client.subscribeAsync(filter, { qos });
    } catch (e) {
      // RabbitMQ answers a subscription it refuses by closing the connection, not with SUBACK 0x80:
      // made again after the reconnect it would close that one too, so it is forgotten here
      this.subscriptions.delete(filter);
      const granted = (e as { packet?: { granted?: number[] } }).packet?.granted;
      if (granted) return granted[0] ?? 128;
      throw new MqsecError('CONNECTION_CLOSED', `no SUBACK for ${filter} (a broker may close the connection on a refused subscription): not subscribed`);
    }
    if ((g[0]?.qos ?? 128) === 128) this.subscriptions.delete(filter);
    return g[0]?.qos ?? 128;
  }

  async unsubscribe(filter: string): Promise<void> {
    this.subscriptions.delete(filter);
    if (this._state === 'online' && this._client) await this._client.unsubscribeAsync(filter);
  }

  /** Groups this app holds keys for. */
  groups() {
    return this.keyring.list();
  }

  /**
   * Closes for good: a clean DISCONNECT if connected, queued messages rejected
   * (CONNECTION_CLOSED), and every key in memory zeroised (group keys, the
   * session's derived keys, ticket and connection keys). The stored counter
   * and ticket stay in `storage` for the next start.
   */
  async end(): Promise<void> {
    if (this._state === 'closed') return;
    const c = this._client;
    this.shutdown();
    if (c?.connected) await c.endAsync().catch(() => c.end(true));
    else c?.end(true);
    this.emit('close');
  }

  private shutdown(error?: MqsecError): void {
    this._state = 'closed';
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.keyTimer);
    clearTimeout(this.heldTimer);
    this.held = [];
    const e = error ?? new MqsecError('CONNECTION_CLOSED', 'app closed');
    for (const m of this.queue.splice(0)) {
      m.plaintext.fill(0);
      m.reject(e);
    }
    this.firstConnect?.reject(e);
    this.firstConnect = undefined;
    this.keyring.destroy();
    this.session.destroy();
  }

  /** @internal starts the first connection; resolves once online, rejects on a refusal, a timeout or a network error. */
  start(): Promise<void> {
    const p = new Promise<void>((resolve, reject) => (this.firstConnect = { resolve, reject }));
    void this.attempt();
    return p;
  }

  /** @internal events are applied one after the other, in arrival order */
  enqueue(f: () => Promise<void> | void): void {
    this.chain = this.chain.then(f, f).catch(() => {});
  }

  private async attempt(): Promise<void> {
    if (this._state === 'closed') return;
    this._state = 'connecting';
    let creds;
    try {
      creds = await this.session.connectCredentials();
    } catch (e) {
      return this.fatal(asMqsecError(e, 'STORAGE'));
    }
    if (this._state !== 'connecting') return; // closed meanwhile
    this.phaseOfAttempt = creds.phase;
    const no = ++this.connNo;
    if (creds.phase === 1 && this.transport.bootstrap) {
      // §15.2: phase 1 on its own connection; the main connection then runs phase 2 with the new ticket
      const r = await this.transport.bootstrap(creds.password, { url: this.url, session: this.session, mqtt: this.mqttOptions, timeoutMs: this.keyTimeoutMs });
      if (no !== this.connNo || this._state !== 'connecting') return;
      if (r.kind !== 'ticket') {
        this.connPhase = 1;
        if (r.kind === 'hint') this.counterHinted = true;
        return this.enqueue(() => this.connectionLost(no, r.kind === 'refused' ? r.code : undefined, r.kind === 'failed' ? r.error : undefined));
      }
      try {
        creds = await this.session.connectCredentials();
      } catch (e) {
        return this.fatal(asMqsecError(e, 'STORAGE'));
      }
      if (no !== this.connNo || this._state !== 'connecting') return;
    }
    this.connPhase = creds.phase;
    const fields = this.transport.connectFields(creds, this.persistent);
    const client = mqtt.connect(this.url, {
      protocolVersion: 4,
      keepalive: 60,
      connectTimeout: 10_000,
      ...this.mqttOptions,
      clean: fields.clean,
      reconnectPeriod: 0, // a one-time password must never be replayed by MQTT.js
      clientId: fields.clientId,
      username: fields.username,
      password: fields.password as unknown as string,
    });
    this._client = client;
    let refused: number | undefined;
    let lastError: Error | undefined;
    // attached before CONNACK: KX2 can arrive in the same read as CONNACK, and events are applied in order
    client.on('message', (topic, payload, packet) => {
      if (no === this.connNo) this.incoming(topic, new Uint8Array(payload), packet);
    });
    client.on('connect', (connack) =>
      this.enqueue(async () => {
        await this.session.onConnack(0);
        if (no !== this.connNo || this._state === 'closed') return;
        this.transport.connected(client, connack.sessionPresent);
        // no RC (phase 2) or KX2 (phase 1) in time: a failed attempt (the next one starts over)
        clearTimeout(this.keyTimer);
        this.keyTimer = setTimeout(() => {
          if (no === this.connNo && this._state === 'connecting' && this.session.state !== 'ready') client.end(true);
        }, this.keyTimeoutMs);
      }),
    );
    client.on('error', (err: Error & { code?: unknown }) => {
      lastError = err;
      if (typeof err.code === 'number') refused = err.code;
    });
    client.once('close', () => {
      client.removeAllListeners('message');
      client.end(true); // MQTT.js must not keep anything of this connection
      this.enqueue(() => this.connectionLost(no, refused, lastError));
    });
  }

  private async connectionLost(no: number, refused: number | undefined, err: Error | undefined): Promise<void> {
    if (no !== this.connNo || this._state === 'closed') return;
    clearTimeout(this.keyTimer);
    this.transport.settled();
    const phase = this.connPhase;
    if (refused !== undefined) await this.session.onConnack(refused); // a refused phase 2 drops the ticket (§7.1)
    this.session.onConnectionLost();
    this.supersededRequests = 0;
    this.keyring.onConnectionLost();
    this.waitingRange = false; // the next connection's first delivery brings a range
    const wasOnline = this._state === 'online';
    const error =
      refused !== undefined
        ? new MqsecError('CONNECTION_REFUSED', `CONNACK ${refused}`)
        : new MqsecError('CONNECTION_CLOSED', err ? err.message : 'connection closed');
    if (refused !== undefined && isFatalRefusal(refused) && phase === 1) return this.fatal(new MqsecError('CONNECTION_REFUSED', `refused (CONNACK ${refused}): unknown, revoked or wrong key`));
    // A refused resumption (ticket unknown or expired) or a counter hint (§5.5): try again at once, with a fresh phase 1 or counter.
    const immediate = (refused !== undefined && phase === 2 && isFatalRefusal(refused)) || this.counterHinted;
    this.counterHinted = false;
    if (wasOnline) this.emit('offline', error);
    if (immediate && this.immediateRetries < MAX_IMMEDIATE_RETRIES) {
      this.immediateRetries++;
      this._state = 'offline';
      this.reconnectTimer = setTimeout(() => void this.attempt(), 0);
      return;
    }
    if (this.firstConnect || this.reconnectOpts === false) return this.fatal(error);
    this._state = 'offline';
    const { initialMs, maxMs } = this.reconnectOpts;
    this.backoffMs = Math.min(maxMs, this.backoffMs ? this.backoffMs * 2 : initialMs);
    // full jitter on the upper half: a fleet of apps cut off together does not come back together
    const delay = this.backoffMs / 2 + Math.random() * (this.backoffMs / 2);
    this.reconnectTimer = setTimeout(() => void this.attempt(), delay);
  }

  private fatal(error: MqsecError): void {
    if (this._state === 'closed') return;
    const first = this.firstConnect;
    this.firstConnect = undefined;
    const c = this._client;
    this.shutdown(error);
    c?.end(true);
    if (first) first.reject(error);
    else this.emit('close', error);
  }

  /** Session ready (KX3 sent, or the resumption confirmed): ask for the group keys (§14.6). */
  private sessionReady(): void {
    this.transport.settled();
    this.requestKeys(true);
    clearTimeout(this.keyTimer);
    const no = this.connNo;
    const deadline = Date.now() + this.keyTimeoutMs;
    // A request the key service cannot answer yet gets no answer at all (a principal provisioned
    // a moment ago, before the key service has the policy that lists it), so it is made again,
    // with growing gaps so that an answer still on its way is not overtaken by the next request.
    const wait = (gap: number) => {
      const left = Math.max(0, deadline - Date.now());
      this.keyTimer = setTimeout(() => {
        if (no !== this.connNo || this._state !== 'connecting') return;
        if (gap < left) {
          this.requestKeys(true);
          return wait(gap * 2);
        }
        // no keys: treat as a failed attempt (the next one asks again)
        const e = new MqsecError('TIMEOUT', 'no group keys from the key service');
        if (this.firstConnect) return this.fatal(e);
        this._client?.end(true);
      }, Math.min(gap, left));
    };
    wait(KEY_RETRY_FIRST_MS);
  }

  /** First key delivery of this connection: online. Subscriptions, then the queue, in order. */
  private async goOnline(): Promise<void> {
    const client = this._client!;
    const no = this.connNo;
    if (this.goingOnline === no) return; // a second key delivery while the subscriptions are under way
    this.goingOnline = no;
    clearTimeout(this.keyTimer);
    // `online` means receiving: a reconnect makes its subscriptions again (the first connect has
    // none yet), and a clean session's subscriptions exist only once the broker acknowledged them:
    // what is published before that is not delivered to this app. A filter `subscribe()` adds
    // meanwhile (the app is not online yet, so it only records it) is made in the next round.
    const made = new Set<string>();
    for (;;) {
      const todo = [...this.subscriptions].filter(([f]) => !made.has(f));
      if (!todo.length) break;
      for (const [f] of todo) made.add(f);
      await new Promise<void>((done) => client.subscribe(Object.fromEntries(todo.map(([f, qos]) => [f, { qos }])), () => done()));
      if (no !== this.connNo || this._state !== 'connecting') return;
    }
    this._state = 'online';
    this.backoffMs = 0;
    this.immediateRetries = 0;
    for (const m of [...this.queue]) {
      if (no !== this.connNo || this._state !== 'online') break;
      this.send(m);
    }
    const first = this.firstConnect;
    this.firstConnect = undefined;
    first?.resolve();
    this.emit('online', { phase: this.phaseOfAttempt, connection: no });
  }

  /** Seals (or, for a resend, re-wraps) one queued message and writes it on the current connection. */
  private send(m: Outgoing): void {
    const client = this._client;
    if (!client || this._state !== 'online' || m.sentOn === this.connNo) return;
    if (this.waitingRange) return; // sent when the next range arrives
    if (m.sealed === undefined && this.keyring.covers(m.topic)) {
      const sq = this.keyring.sequence;
      if (sq.next >= sq.limit) {
        // §14.4: the group sequence range is used up before the next one arrived: ask (again) and wait for it
        this.waitingRange = true;
        this.requestKeys(true);
        return;
      }
    }
    let wire: Uint8Array;
    try {
      wire = this.wire(m);
    } catch (e) {
      const err = asMqsecError(e);
      if (err.code === 'NONCE_EXHAUSTED') {
        // §8.3 / §14.5: counters used up (the session's, or a re-seal's): a new connection brings new keys and a new range
        client.end(true);
        return;
      }
      this.remove(m);
      m.reject(err);
      return;
    }
    const no = this.connNo;
    m.sentOn = no;
    client.publish(m.topic, Buffer.from(wire.buffer, wire.byteOffset, wire.byteLength), { qos: m.qos, retain: m.retain }, (err) => {
      // an error here is the connection going away: the message stays queued for the next one
      if (err || m.sentOn !== no) return;
      this.remove(m);
      m.resolve();
    });
  }

  private wire(m: Outgoing): Uint8Array {
    if (m.sealed === undefined) {
      if (this.keyring.covers(m.topic)) {
        m.mode = 'e2e';
        m.sealed = this.keyring.seal(m.topic, m.plaintext);
        if (this.keyring.wantsRange) this.requestKeys(true); // §14.4: the next range before this one runs out
      } else if (!this.transport.hop) {
        fail('NOT_AUTHORIZED', `no group key for ${m.topic}: on a stock broker an app publishes only on end-to-end topics its policy lets it write (§15)`);
      } else {
        m.mode = 'hop';
        m.sealed = this.session.seal(m.topic, m.plaintext);
        return m.sealed;
      }
      // §14.5: the trailer belongs to this connection, so it is made right before the write
      return this.transport.wrapGroup(this.session, m.topic, m.sealed);
    }
    if (m.mode === 'e2e') {
      // §14.5: a resend keeps its group envelope while readers can still open its epoch (current or previous),
      // so a reader that got the first copy drops this one as a replay; an envelope of a forgotten epoch is sealed again.
      const own = this.keyring.reopenOwn(m.topic, m.sealed);
      if (own) own.fill(0);
      else m.sealed = this.keyring.seal(m.topic, m.plaintext);
      return this.transport.wrapGroup(this.session, m.topic, m.sealed);
    }
    // §8.5: resend unchanged under the previous connection's keys (the broker's grace keys and window
    // deduplicate); what is older is re-sealed under the current keys. After a broker crash (no grace
    // keys) the unchanged copy is refused with the connection, and the next connection re-seals it.
    const again = this.session.resealForResend(m.topic, m.sealed);
    if (again) m.sealed = again;
    return m.sealed;
  }

  private remove(m: Outgoing): void {
    const i = this.queue.indexOf(m);
    if (i >= 0) this.queue.splice(i, 1);
    m.plaintext.fill(0);
  }

  /** @internal every received PUBLISH of the current connection */
  incoming(topic: string, payload: Uint8Array, packet?: IPublishPacket): void {
    const retain = packet?.retain ?? false;
    this.enqueue(async () => {
      if (this._state === 'closed') return;
      const proto = this.transport.protocolTopic(topic, payload);
      if (proto === GK_TOPIC) {
        let changed: string[];
        try {
          changed = this.keyring.acceptDelivery(payload);
        } catch (e) {
          const err = asMqsecError(e);
          // the answer to a request this connection has since made again (§14.6: only the latest
          // request's answer opens) is expected, not a drop: at most one per superseded request
          if (err.code === 'DECRYPT_FAILED' && this.supersededRequests > 0) this.supersededRequests--;
          else this.emit('dropped', topic, err);
          return;
        }
        this.supersededRequests = 0;
        const firstOnline = this.firstConnect !== undefined;
        if (this._state === 'connecting' && this.session.state === 'ready') await this.goOnline();
        else if (this.waitingRange) {
          // the next sequence range: what waited for it goes out now, in order
          this.waitingRange = false;
          for (const m of [...this.queue]) this.send(m);
        }
        if (changed.length) this.emit('keys', changed);
        // messages that came ahead of their epoch's key get one more try
        const retry = () => {
          for (const h of this.held.splice(0)) this.openGroupMessage(h.topic, h.payload, h.retain, false);
        };
        // at the first connect the caller of connectApp attaches its listeners only once it resolves:
        // what a persistent session's queue brought ahead of the keys (§15.10) is opened a turn later
        if (firstOnline && this._state === 'online' && this.held.length) setTimeout(() => this.enqueue(retry), 0);
        else retry();
        return;
      }
      // §14.1: a topic of a group this app holds opens only under the group key, never as a hop-by-hop
      // envelope, which the broker could make: routing by group membership keeps the broker out of it
      if (proto === undefined && this.keyring.covers(topic)) return this.openGroupMessage(topic, payload, retain, true);
      if (proto === undefined && !this.transport.hop) return this.openStockMessage(topic, payload, retain);
      // §15.3: the key service answers each ask for RC (after the SUBSCRIBE, the token, a second ask): the later copies come to a ready session
      if (proto !== undefined && this.transport.repeatsRc && this.session.state === 'ready' && payload[0] === MSG_RESUME_CONFIRM) return;
      const r = await this.session.handleIncoming(proto ?? topic, payload);
      if (r.kind === 'handshake') {
        await this._client?.publishAsync(r.reply.topic, Buffer.from(r.reply.payload), { qos: 0 });
        this.sessionReady();
      } else if (r.kind === 'confirmed') {
        this.sessionReady(); // phase 2 is ready at the broker's confirmation (§6.4)
      } else if (r.kind === 'counter-hint') {
        this.counterHinted = true; // the broker closes this connection; the next attempt uses a counter past the hint
      } else if (r.kind === 'message') {
        this.emit('message', topic, Buffer.from(r.payload), { mode: 'hop', retain });
      } else if (r.kind === 'dropped') this.emit('dropped', topic, r.error);
    });
  }

  /**
   * §14.7 receiver checks (GroupKeyring.open). An envelope of an epoch this
   * app lacks (a key push it missed or that is still on its way) is held,
   * at most MAX_HELD of them for one key request, and opened after the next
   * delivery; UNKNOWN_SESSION changes no state, so trying again is safe.
   */
  private openGroupMessage(topic: string, payload: Uint8Array, retain: boolean, mayHold: boolean): void {
    try {
      const m = this.keyring.open(topic, payload);
      this.emit('message', topic, Buffer.from(m.plaintext), { mode: 'e2e', publisher: m.publisher, group: m.group, epoch: m.epoch, retain });
      m.plaintext.fill(0);
    } catch (e) {
      const err = asMqsecError(e);
      if (err.code === 'UNKNOWN_SESSION' && mayHold && this.held.length < MAX_HELD) {
        // the keys moved on: ask again (§14.6), at most once a second
        this.requestKeys(false);
        this.held.push({ topic, payload, retain });
        clearTimeout(this.heldTimer);
        this.heldTimer = setTimeout(() => this.enqueue(() => this.dropHeld()), this.keyTimeoutMs);
        return;
      }
      this.emit('dropped', topic, err);
    }
  }

  /**
   * §15: on a stock broker every message is a group envelope. One outside the
   * groups held arriving before this connection's keys (the persistent
   * session's queue is delivered right after CONNACK) waits for them; later
   * it is dropped: no hop-by-hop envelope exists there to open.
   */
  private openStockMessage(topic: string, payload: Uint8Array, retain: boolean): void {
    if (this._state !== 'online' && this.held.length < MAX_HELD) {
      this.held.push({ topic, payload, retain });
      return;
    }
    this.emit('dropped', topic, new MqsecError('NOT_AUTHORIZED', 'no group key for this topic'));
  }

  private dropHeld(): void {
    for (const h of this.held.splice(0)) this.emit('dropped', h.topic, new MqsecError('UNKNOWN_SESSION', 'no key for this group epoch'));
  }

  /** @internal GKREQ (§14.6): after every CONNACK, and (throttled) when an unknown epoch shows up. */
  requestKeys(force: boolean): void {
    if (this.session.state !== 'ready' || !this._client) return;
    if (!force) {
      // only these requests are throttled (an attacker's envelopes with unknown epochs must not make the app flood the key service)
      const now = Date.now();
      if (now - this.lastKeyRequest < KEY_REQUEST_MIN_INTERVAL_MS) return;
      this.lastKeyRequest = now;
    }
    if (this.keyring.awaitingDelivery) this.supersededRequests++;
    this._client.publish(this.transport.keyRequestTopic, Buffer.from(this.keyring.request()), { qos: 0 });
  }
}

/**
 * Connects, authenticates (phase 1 or 2) and waits for the group keys.
 * Resolves with the app online; rejects (typed MqsecError) when the first
 * connection is refused, times out or cannot be made. After that the app
 * reconnects by itself (unless `reconnect: false`) until `end()`.
 */
export async function connectApp(opts: ConnectAppOptions): Promise<MqsecApp> {
  const suite = opts.suite ?? createNodeCryptoSuite();
  const key = typeof opts.key === 'string' ? fromHex(opts.key) : opts.key.slice();
  const flavour = opts.flavour ?? 'mqsec';
  if (flavour !== 'mqsec' && flavour !== 'stock') throw new MqsecError('MALFORMED', 'flavour must be "mqsec" or "stock"');
  let session: DeviceSecureSession;
  let keyring: GroupKeyring;
  let transport: BrokerTransport = mqsecTransport;
  try {
    session = new DeviceSecureSession({ suite, devId: opts.id, deviceKey: key, storage: opts.storage ?? new MemoryStorage(), storageKey: 'mqsecstate' });
    keyring = new GroupKeyring({ suite, id: opts.id, keyServiceKey: deriveKeyServiceKey(suite, key, opts.id) });
    if (flavour === 'stock') {
      // §15.2: the bootstrap password comes from K_auth; K_psk is not needed here (the session derives its own)
      const { authKey, pskKey } = deriveDeviceKeys(suite, key, opts.id);
      pskKey.fill(0);
      transport = new StockTransport(opts.id, bootPassword(suite, authKey, opts.id));
      authKey.fill(0);
    }
  } finally {
    key.fill(0);
  }
  const app = new MqsecApp(session, keyring, { ...opts, transport });
  await app.start();
  return app;
}
