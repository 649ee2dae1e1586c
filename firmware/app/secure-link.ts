/**
 * The app's `SecureLink` on top of the secure glue (`SecureMqttClient`,
 * firmware/app/secure-mqtt.ts) and any MQTT client the glue can drive: the
 * firmware MQTT client (firmware/mqtt/client.ts) or the Moddable SDK's stock
 * `mqtt` module (firmware/platform/moddable/stock-mqtt.ts).
 *
 * Every `open` builds a fresh MQTT client around the same DeviceSecureSession
 * (which carries the ticket and counter), so reconnect policy lives in one
 * place, the app's state machine, and a dead client never keeps retrying
 * behind its back.
 *
 * The glue is reached through a structural interface (SecureGlue) so this
 * module stays small and testable with fakes.
 */
import { MqsecError, asMqsecError } from '../core/errors.js';
import type { Log } from '../core/platform.js';
import { silentLog } from '../core/platform.js';
import type { SecureLink, SecureLinkEvents, SecureLinkOpened } from './ports.js';
import type { MqttClientLike, SecureHooks } from './secure-mqtt.js';
import { Outbox } from './outbox.js';

/** The glue's hooks (SecureMqttClient.hooks). */
export type GlueHooks = SecureHooks;

/** An MQTT client the link can start and stop, and the glue can drive. */
export interface ConnectableMqttClient extends MqttClientLike {
  start(): void | Promise<void>;
  disconnect(): Promise<void>;
}

/** The part of SecureMqttClient the link uses (structural, so tests may pass a fake). */
export interface SecureGlue {
  readonly hooks: SecureHooks;
  attach(client: MqttClientLike): void;
  publish(topic: string, plaintext: Uint8Array, opts?: { qos?: 0 | 1; retain?: boolean }): Promise<void>;
  subscribe(filter: string, qos?: 0 | 1): Promise<unknown>;
  /** §14.1: the protection mode of a topic as the device knows it (glues without group keys: always 'hop'). */
  modeOf?(topic: string): 'e2e' | 'hop';
}

export interface GlueCallbacks {
  onMessage(topic: string, payload: Uint8Array): void;
  onReady(phase: 1 | 2): void;
  onError(e: MqsecError): void;
}

export interface SecureMqttLinkOptions {
  /** e.g. (cb) => new SecureMqttClient({ session, log, ...cb }) */
  createGlue(callbacks: GlueCallbacks): SecureGlue;
  /** e.g. (hooks) => new MqttClient({ transport, timer, ..., ...hooks }) or a StockMqttAdapter. */
  createClient(hooks: GlueHooks): ConnectableMqttClient;
  log?: Log;
  /** Unacknowledged QoS 1 messages kept for the next connection (default 16). */
  outboxCapacity?: number;
}

/** What a client's onClose error says: a refused CONNACK (returnCode), an MqsecError, or nothing useful. */
function closeReason(error: unknown): MqsecError | undefined {
  if (error instanceof MqsecError) return error;
  const rc = error && typeof (error as { returnCode?: unknown }).returnCode === 'number' ? (error as { returnCode: number }).returnCode : undefined;
  return rc === undefined ? undefined : new MqsecError('CONNECTION_REFUSED', `broker refused the connection (return code ${rc})`);
}

export class SecureMqttLink implements SecureLink {
  private glue: SecureGlue | undefined;
  private client: ConnectableMqttClient | undefined;
  /** Bumped on every open/close so callbacks from an older connection are ignored. */
  private generation = 0;
  private readonly log: Log;
  /** Sealed QoS 1 messages not yet acknowledged, carried from one connection to the next. */
  readonly outbox: Outbox;
  /** QoS 1 messages published while no session had keys: sealed once the next one is ready. */
  private unsealed: { topic: string; payload: Uint8Array }[] = [];
  /** The current connection's session has keys. */
  private ready = false;

  constructor(private readonly o: SecureMqttLinkOptions) {
    this.log = o.log ?? silentLog;
    this.outbox = new Outbox(o.outboxCapacity ?? 16, this.log);
  }

  open(events: SecureLinkEvents): Promise<SecureLinkOpened> {
    const gen = ++this.generation;
    this.ready = false;
    return new Promise<SecureLinkOpened>((resolve, reject) => {
      let opened = false;
      let settled = false;
      let down = false;
      let lastError: MqsecError | undefined;
      const current = () => gen === this.generation;
      const glue = this.o.createGlue({
        onMessage: (topic, payload) => {
          if (current()) events.onMessage(topic, payload);
        },
        onReady: (phase) => {
          if (!current() || settled) return;
          // messages left unacknowledged by earlier connections go out first, under this session
          if (this.client) this.outbox.resend(this.client, gen, (t, env, e2e, plaintext) => glue.hooks.onResend({ topic: t, payload: env, e2e, plaintext }));
          this.ready = true;
          for (const m of this.unsealed.splice(0)) glue.publish(m.topic, m.payload, { qos: 1 }).catch(() => {}); // now in the outbox
          settled = true;
          opened = true;
          resolve({ phase });
        },
        onError: (e) => {
          lastError = e;
          this.log.warn('secure glue error', { code: e.code });
          // Before keys are in place any error is the handshake failing (e.g. a KX2 that does not
          // verify): give up on this connection now rather than waiting for the app's timeout.
          if (current() && !settled) {
            settled = true;
            this.dispose();
            reject(e);
          }
        },
      });
      const hooks: GlueHooks = {
        credentials: () => glue.hooks.credentials(),
        onConnect: (connack) => glue.hooks.onConnect(connack),
        onMessage: (p) => glue.hooks.onMessage(p),
        onResend: (m) => glue.hooks.onResend(m),
        onClose: (error) => {
          if (down) return; // a client that reports its close twice
          down = true;
          this.outbox.release();
          if (current()) this.ready = false;
          // The glue first: a refused CONNACK (error.returnCode) makes the session drop its ticket.
          glue.hooks.onClose(error);
          if (!current()) return;
          // One connection per open: stop a self-reconnecting client, the app decides what next.
          this.dispose();
          if (!settled) {
            settled = true;
            reject(closeReason(error) ?? lastError ?? new MqsecError('CONNECTION_CLOSED', 'closed before the secure session was ready'));
          } else if (opened) events.onDown(lastError ?? new MqsecError('CONNECTION_CLOSED', 'connection lost'));
        },
      };
      let client: ConnectableMqttClient;
      try {
        client = this.o.createClient(hooks);
        const connected = client;
        glue.attach({
          publish: (topic, payload, opts) => this.outbox.publish(connected, gen, topic, payload, opts),
          subscribe: (filter, qos) => connected.subscribe(filter, qos),
          release: connected.release ? () => connected.release!() : undefined,
        });
      } catch (e) {
        settled = true;
        reject(asMqsecError(e));
        return;
      }
      this.glue = glue;
      this.client = client;
      Promise.resolve()
        .then(() => client.start())
        .catch((e) => {
          if (!current() || settled) return;
          settled = true;
          this.dispose();
          reject(asMqsecError(e, 'CONNECTION_REFUSED'));
        });
    });
  }

  async publish(topic: string, payload: Uint8Array, qos: 0 | 1 = 1): Promise<void> {
    if (!this.glue || !this.ready) {
      // No keys to seal under right now (the connection just died): a QoS 1 message is
      // kept as plaintext and sealed under the next session, instead of being lost.
      if (qos === 1) this.keepUnsealed(topic, payload);
      throw new MqsecError('NOT_CONNECTED', 'secure link is not open');
    }
    // ready: the glue seals at once and the outbox holds the envelope until its PUBACK
    try {
      await this.glue.publish(topic, payload, { qos });
    } catch (e) {
      const err = asMqsecError(e);
      if (err.code === 'NONCE_EXHAUSTED') {
        // §8.3 / §14.4: this connection's sequence range is used up and nothing was sent.
        // A new connection brings new keys and a new range: keep the message for it and
        // end this one (the app sees the link go down and reconnects).
        if (qos === 1) this.keepUnsealed(topic, payload);
        this.log.warn('sequence range used up: reconnecting');
        this.client?.disconnect().catch(() => {});
      }
      throw err;
    }
  }

  /** §14.1: the protection mode of a topic on the current connection. */
  modeOf(topic: string): 'e2e' | 'hop' {
    return this.glue?.modeOf?.(topic) ?? 'hop';
  }

  private keepUnsealed(topic: string, payload: Uint8Array): void {
    if (this.unsealed.length >= this.outbox.capacity) {
      this.unsealed.shift();
      this.outbox.dropped++;
      this.log.warn('unsent queue full: oldest message dropped');
    }
    this.unsealed.push({ topic, payload: payload.slice() });
  }

  async subscribe(filter: string): Promise<void> {
    if (!this.glue) throw new MqsecError('NOT_CONNECTED', 'secure link is not open');
    await this.glue.subscribe(filter, 1);
  }

  unacknowledged(): number {
    return this.outbox.size + this.unsealed.length;
  }

  async close(): Promise<void> {
    // A clean close (going to sleep) first lets unacknowledged readings drain: RAM does not
    // survive deep sleep. A dead connection releases the wait at once.
    if (this.client && this.glue) await this.outbox.whenEmpty();
    this.generation++;
    this.ready = false;
    const client = this.client;
    this.glue = undefined;
    this.client = undefined;
    if (!client) return;
    try {
      await client.disconnect();
    } catch {
      // closing never fails from the app's point of view
    }
  }

  private dispose(): void {
    this.ready = false;
    const client = this.client;
    this.glue = undefined;
    this.client = undefined;
    if (client) client.disconnect().catch(() => {});
  }
}
