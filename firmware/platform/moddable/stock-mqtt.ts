/**
 * mqsec through the Moddable SDK's own `mqtt` module (modules/network/mqtt/mqtt.js),
 * the "existing MQTT API" on Moddable: presents the stock client as the
 * `MqttClientLike` the secure glue (firmware/app/secure-mqtt.ts) accepts and
 * drives the glue's hooks from the stock client's callbacks.
 *
 * The stock client, as read from the SDK source:
 *   new Client({ host, port, id, user, password, timeout })   // password: ArrayBuffer or string
 *   onConnected()      TCP is up, CONNECT is being sent
 *   onReady()          CONNACK accepted (return code 0)
 *   onMessage(topic, payload: ArrayBuffer)   every PUBLISH, subscribed or not
 *   onClose()          any failure: socket error, CONNACK refused ("server rejected
 *                      mqtt request with code N"), protocol error, keepalive timeout
 *   publish(topic, data: ArrayBuffer | string, flags?)  QoS 0 only (throws when not connected)
 *   subscribe(topic)   QoS 0, SUBACK not reported
 *   close(immediate?)
 *
 * Consequences handled here:
 * - QoS 1 is not available: publishes go out at QoS 0 and resolve once
 *   written. (QoS 1 needs the firmware MQTT client, firmware/mqtt/client.ts.)
 * - The CONNACK return code is not reported through the callbacks. The
 *   client's `dispatch(msg)` method (every parsed packet passes through it;
 *   a CONNACK has code 0x20 and `returnCode`) is wrapped on the instance to
 *   read it, so a refusal reaches the glue as onClose({ returnCode }) and a
 *   refused phase-2 ticket is dropped (next connect: phase 1), while a
 *   network failure keeps the ticket. If a future SDK drops `dispatch`, the
 *   adapter falls back to a heuristic: a close after onConnected and before
 *   onReady counts as a refusal (return code 5); that may cost one phase 1
 *   after a network failure, never a wrong acceptance.
 * - The stock client does not reconnect: `start()` makes one attempt; the
 *   caller (the app's state machine) decides when to try again.
 */
import { MqsecError, asMqsecError } from '../../core/errors.js';
import type { Log } from '../../core/platform.js';
import { silentLog } from '../../core/platform.js';

export interface StockMqttClientOptions {
  host: string;
  port?: number;
  id?: string;
  user?: string;
  password?: ArrayBuffer;
  /** Keepalive in milliseconds (0: none). */
  timeout?: number;
}

/** The stock client's instance interface (the callbacks are assigned properties). */
export interface StockMqttClient {
  /** Internal to the SDK client: every parsed packet (a CONNACK is { code: 0x20, returnCode }). */
  dispatch?: (msg: { code?: number; returnCode?: number }) => unknown;
  onConnected?: () => void;
  onReady?: () => void;
  onMessage?: (topic: string, payload: ArrayBuffer) => void;
  onClose?: () => void;
  publish(topic: string, data: ArrayBuffer | string, flags?: { retain?: boolean }): void;
  subscribe(topic: string): void;
  close(immediate?: boolean): void;
}

export type StockMqttClientConstructor = new (options: StockMqttClientOptions) => StockMqttClient;

/** The glue's hooks (SecureMqttClient.hooks in firmware/app/secure-mqtt.ts). */
export interface SecureGlueHooks {
  credentials(): Promise<{ clientId: string; username?: string; password?: Uint8Array }>;
  onConnect(connack?: { returnCode?: number }): void;
  onMessage(packet: { topic: string; payload: Uint8Array }): void;
  /** A refused CONNACK is reported as an error carrying `returnCode`. */
  onClose(error?: { returnCode?: number } | unknown): void;
}

export interface StockMqttAdapterOptions {
  Client: StockMqttClientConstructor;
  host: string;
  port: number;
  keepaliveMs?: number;
  hooks: SecureGlueHooks;
  log?: Log;
}

const CONNACK = 0x20;

/** CONNACK return code 5 (MQTT 3.1.1 section 3.2.2.3): "Connection Refused, not authorized". */
export const ASSUMED_REFUSAL_CODE = 5;

function toArrayBuffer(b: Uint8Array): ArrayBuffer {
  const ab = new ArrayBuffer(b.length);
  new Uint8Array(ab).set(b);
  return ab;
}

export class StockMqttAdapter {
  private client: StockMqttClient | undefined;
  private state: 'idle' | 'connecting' | 'tcp-up' | 'ready' | 'closed' = 'idle';
  /** CONNACK return code seen through the wrapped dispatch, for this connection. */
  private connackCode: number | undefined;
  private canSeeConnack = false;
  private readonly log: Log;

  constructor(private readonly o: StockMqttAdapterOptions) {
    this.log = o.log ?? silentLog;
  }

  get connected(): boolean {
    return this.state === 'ready';
  }

  /** One connection attempt with fresh credentials from the glue. Errors are reported through hooks.onClose. */
  async start(): Promise<void> {
    if (this.state === 'connecting' || this.state === 'tcp-up' || this.state === 'ready') return;
    this.state = 'connecting';
    let creds: Awaited<ReturnType<SecureGlueHooks['credentials']>>;
    try {
      creds = await this.o.hooks.credentials();
    } catch (e) {
      // e.g. STORAGE: the counter could not be persisted, so nothing may be sent
      this.log.error('no credentials', { code: asMqsecError(e).code });
      this.state = 'closed';
      this.o.hooks.onClose();
      return;
    }
    if (this.state !== 'connecting') return; // disconnect() while waiting
    const options: StockMqttClientOptions = { host: this.o.host, port: this.o.port, id: creds.clientId, timeout: this.o.keepaliveMs ?? 60_000 };
    if (creds.username !== undefined) options.user = creds.username;
    // The stock client sends an ArrayBuffer password as is (binary KX1 / resume token).
    if (creds.password !== undefined) options.password = toArrayBuffer(creds.password);
    let client: StockMqttClient;
    try {
      client = new this.o.Client(options);
    } catch (e) {
      this.log.error('stock client refused options', { message: String(e) });
      this.state = 'closed';
      this.o.hooks.onClose();
      return;
    }
    this.client = client;
    this.connackCode = undefined;
    const dispatch = client.dispatch;
    this.canSeeConnack = typeof dispatch === 'function';
    if (typeof dispatch === 'function') {
      // defineProperty, not assignment: the SDK class is preloaded, its prototype frozen, and
      // assigning over a frozen prototype's method throws (the "override mistake").
      Object.defineProperty(client, 'dispatch', {
        configurable: true,
        writable: true,
        value: (msg: { code?: number; returnCode?: number }) => {
          if (this.client === client && msg && msg.code === CONNACK && typeof msg.returnCode === 'number') this.connackCode = msg.returnCode;
          return dispatch.call(client, msg);
        },
      });
    }
    client.onConnected = () => {
      if (this.client === client && this.state === 'connecting') this.state = 'tcp-up';
    };
    client.onReady = () => {
      if (this.client !== client) return;
      this.state = 'ready';
      this.o.hooks.onConnect({ returnCode: 0 });
    };
    client.onMessage = (topic, payload) => {
      if (this.client !== client) return;
      this.o.hooks.onMessage({ topic, payload: new Uint8Array(payload) });
    };
    client.onClose = () => this.lost(client);
  }

  private lost(client: StockMqttClient): void {
    if (this.client !== client) return;
    const before = this.state;
    this.client = undefined;
    this.state = 'closed';
    if (before === 'ready') return this.o.hooks.onClose();
    if (this.canSeeConnack) {
      // Exact: a refusal only when the broker said so in a CONNACK.
      const rc = this.connackCode;
      if (rc !== undefined && rc !== 0) this.o.hooks.onClose({ returnCode: rc });
      else this.o.hooks.onClose();
      return;
    }
    // Fallback (see the header comment): TCP was up but no CONNACK 0 arrived.
    if (before === 'tcp-up') this.o.hooks.onClose({ returnCode: ASSUMED_REFUSAL_CODE });
    else this.o.hooks.onClose();
  }

  // ---- MqttClientLike (what the glue calls) ----

  /** `immediate` (send ahead of queued traffic) needs no handling: the stock client writes at once. */
  async publish(topic: string, payload: Uint8Array, opts: { qos?: 0 | 1; retain?: boolean; immediate?: boolean }): Promise<void> {
    const client = this.client;
    if (!client || this.state !== 'ready') throw new MqsecError('NOT_CONNECTED', 'stock MQTT client is not connected');
    if (opts.qos === 1) this.log.debug('stock mqtt: QoS 1 sent as QoS 0');
    try {
      client.publish(topic, toArrayBuffer(payload), opts.retain ? { retain: true } : undefined);
    } catch (e) {
      throw new MqsecError('CONNECTION_CLOSED', 'stock MQTT publish failed');
    }
  }

  async subscribe(filter: string, _qos?: 0 | 1): Promise<unknown> {
    const client = this.client;
    if (!client || this.state !== 'ready') throw new MqsecError('NOT_CONNECTED', 'stock MQTT client is not connected');
    try {
      client.subscribe(filter);
    } catch {
      throw new MqsecError('CONNECTION_CLOSED', 'stock MQTT subscribe failed');
    }
    return [0];
  }

  /** Closes with a DISCONNECT; hooks.onClose is called once. */
  async disconnect(): Promise<void> {
    const client = this.client;
    if (!client) {
      this.state = 'closed';
      return;
    }
    this.client = undefined;
    this.state = 'closed';
    try {
      client.close();
    } catch {
      // already closed
    }
    this.o.hooks.onClose();
  }
}
