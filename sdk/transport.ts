/**
 * What differs between the two kinds of broker an app can join
 * (docs/protocol.md §15.1), kept out of the app's one connection state
 * machine (app.ts):
 *
 *   - the mqsec broker (§5, §6, §14): KX1 is the CONNECT password, the broker
 *     answers on `$mqsec/kx`, key requests go to `$mqsec/gk`, an end-to-end
 *     message carries this connection's channel trailer (§14.5), and other
 *     topics are hop by hop (§8);
 *   - a stock broker with the mqsec key service beside it (§15): phase 1 runs
 *     on its own bootstrap connection (`boot@ID`, KX1/KX2 as PUBLISHes on
 *     `mqsec/up/ID` / `mqsec/down/ID`, §15.2), phase 2 sends the text form of
 *     the token on a persistent session and takes RC from the kept
 *     subscription (§15.3), key requests go up and deliveries come down the
 *     same two topics, group envelopes travel as they are (no trailer: the
 *     broker cannot check one), and there is no hop-by-hop mode (the broker
 *     holds no key to open or re-seal an envelope).
 *
 * Topics, the bootstrap credential and the header-byte mapping come from
 * firmware/secure/stock.ts, the same code the device uses.
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { MqsecError } from '../firmware/core/errors.js';
import type { ConnectCredentials, DeviceSecureSession } from '../firmware/secure/device.js';
import { KX_TOPIC } from '../firmware/secure/constants.js';
import { GK_TOPIC } from '../firmware/secure/group.js';
import { toTextForm } from '../firmware/secure/messages.js';
import { bootUsername, downTopic, protocolTopicOfDown, upTopic, type BrokerFlavour } from '../firmware/secure/stock.js';

export type { BrokerFlavour };

/** The MQTT.js CONNECT fields of a main connection. */
export interface ConnectFields {
  clientId: string;
  username: string;
  password: Buffer;
  clean: boolean;
}

/** How a phase 1 on its own connection ended. */
export type BootstrapOutcome =
  /** KX2 verified: the session holds a ticket, phase 2 follows on the main connection. */
  | { kind: 'ticket' }
  /** §5.5 counter hint: the session moved its counter; try again at once. */
  | { kind: 'hint' }
  /** CONNACK refused the bootstrap login (the session still waits for a CONNACK code). */
  | { kind: 'refused'; code: number }
  /** No connection, lost, or no answer in time. */
  | { kind: 'failed'; error: Error };

export interface BootstrapContext {
  url: string;
  session: DeviceSecureSession;
  mqtt: IClientOptions;
  timeoutMs: number;
}

export interface BrokerTransport {
  readonly flavour: BrokerFlavour;
  /** Topics outside every group are hop by hop (§8): the broker opens and re-seals them. False on a stock broker. */
  readonly hop: boolean;
  /** Where GKREQ goes (§14.6). */
  readonly keyRequestTopic: string;
  /** RC can come more than once (§15.3: asked for again); a late copy is no attack and not reported. */
  readonly repeatsRc: boolean;
  /** CONNECT fields for the main connection with these credentials. */
  connectFields(creds: ConnectCredentials, persistent: boolean): ConnectFields;
  /** Phase 1 on a connection of its own before the main one (§15.2); absent: KX1 is the main CONNECT's password (§5.1). */
  bootstrap?(kx1: Uint8Array, ctx: BootstrapContext): Promise<BootstrapOutcome>;
  /** CONNACK 0 of the main connection. */
  connected(client: MqttClient, sessionPresent: boolean): void;
  /** The session is ready, or the connection is gone: stop what `connected` started. */
  settled(): void;
  /** The protocol topic (`$mqsec/kx`, `$mqsec/gk`) an incoming PUBLISH stands for; undefined: an application message. */
  protocolTopic(topic: string, payload: Uint8Array): string | undefined;
  /** An end-to-end envelope as it goes on the wire (§14.5 trailer or §15.1 none). */
  wrapGroup(session: DeviceSecureSession, topic: string, genv: Uint8Array): Uint8Array;
}

/** The mqsec broker (§5, §6, §14): the protocol rides in CONNECT and on `$mqsec/…`. */
export const mqsecTransport: BrokerTransport = {
  flavour: 'mqsec',
  hop: true,
  keyRequestTopic: GK_TOPIC,
  repeatsRc: false,
  connectFields: (creds, persistent) => ({ clientId: creds.clientId, username: creds.username, password: Buffer.from(creds.password), clean: !persistent }),
  connected: () => {},
  settled: () => {},
  protocolTopic: (topic) => (topic === KX_TOPIC || topic === GK_TOPIC ? topic : undefined),
  wrapGroup: (session, topic, genv) => session.wrapChannel(topic, genv),
};

/** §15.3: without RC this long after CONNACK, ask for it once more. */
const RC_ASK_AGAIN_MS = 1000;

/** A stock broker with the mqsec key service beside it (§15). One per app: it keeps the token of the current connection. */
export class StockTransport implements BrokerTransport {
  readonly flavour = 'stock' as const;
  readonly hop = false;
  readonly repeatsRc = true;
  readonly keyRequestTopic: string;
  private readonly down: string;
  /** The binary RESUME of the current connection: public once sent; publishing it on the up topic asks for RC again (§15.3). */
  private token: Uint8Array | undefined;
  private askAgain: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly id: string,
    /** §15.2 bootstrap password (bootPassword), computed once from K_auth. */
    private readonly bootPassword: string,
  ) {
    this.keyRequestTopic = upTopic(id);
    this.down = downTopic(id);
  }

  connectFields(creds: ConnectCredentials): ConnectFields {
    if (creds.phase !== 2) throw new MqsecError('BAD_STATE', 'on a stock broker phase 1 runs on the bootstrap connection (§15.2)');
    this.token = creds.password.slice();
    // §15.3: the persistent session keeps the down-topic subscription, so RC follows CONNACK with no SUBSCRIBE
    return { clientId: this.id, username: this.id, password: Buffer.from(toTextForm(creds.password), 'utf8'), clean: false };
  }

  /**
   * §15.2: `boot@ID` with the bootstrap password, SUBSCRIBE to the down topic,
   * KX1 on the up topic, KX2 (or a counter hint) back, DISCONNECT. Its own
   * MQTT.js client, never reconnected; events applied in arrival order.
   */
  bootstrap(kx1: Uint8Array, ctx: BootstrapContext): Promise<BootstrapOutcome> {
    const user = bootUsername(this.id);
    const client = mqtt.connect(ctx.url, {
      protocolVersion: 4,
      keepalive: 60,
      connectTimeout: 10_000,
      ...ctx.mqtt,
      clean: true,
      reconnectPeriod: 0,
      clientId: user,
      username: user,
      password: this.bootPassword,
    });
    return new Promise<BootstrapOutcome>((resolve) => {
      let chain = Promise.resolve();
      let done = false;
      const finish = (o: BootstrapOutcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        client.removeAllListeners('message');
        // DISCONNECT after an answer; a failed bootstrap is dropped
        const closing = o.kind === 'ticket' || o.kind === 'hint' ? client.endAsync().catch(() => client.end(true)) : Promise.resolve(client.end(true));
        void closing.then(() => {
          // the session's phase-1 keys belong to this connection only (its traffic keys are never used on a stock broker)
          if (o.kind !== 'refused') ctx.session.onConnectionLost();
          resolve(o);
        });
      };
      const timer = setTimeout(() => finish({ kind: 'failed', error: new MqsecError('TIMEOUT', 'no KX2 from the key service') }), ctx.timeoutMs);
      const serial = (f: () => Promise<void> | void) => (chain = chain.then(f).catch(() => {}));
      client.on('message', (topic, payload) =>
        serial(async () => {
          const proto = topic === this.down ? protocolTopicOfDown(payload) : undefined;
          if (proto !== KX_TOPIC || done) return;
          const r = await ctx.session.handleIncoming(KX_TOPIC, new Uint8Array(payload));
          // KX3 is not sent: the first phase-2 CONNECT is the key confirmation (§15.2)
          if (r.kind === 'handshake') finish({ kind: 'ticket' });
          else if (r.kind === 'counter-hint') finish({ kind: 'hint' });
        }),
      );
      client.once('connect', () =>
        serial(async () => {
          await ctx.session.onConnack(0);
          try {
            await client.subscribeAsync(this.down, { qos: 0 });
            await client.publishAsync(upTopic(this.id), Buffer.from(kx1), { qos: 0 });
          } catch (e) {
            finish({ kind: 'failed', error: e as Error });
          }
        }),
      );
      client.on('error', (err: Error & { code?: unknown }) => {
        if (typeof err.code === 'number') finish({ kind: 'refused', code: err.code });
        else finish({ kind: 'failed', error: err });
      });
      client.once('close', () => finish({ kind: 'failed', error: new MqsecError('CONNECTION_CLOSED', 'bootstrap connection closed before KX2') }));
    });
  }

  connected(client: MqttClient, sessionPresent: boolean): void {
    const token = this.token;
    if (!token) return;
    const ask = () => client.publish(this.keyRequestTopic, Buffer.from(token), { qos: 0 });
    // §15.3: no session, so no subscription: subscribe, then ask for the RC of this connection again
    if (!sessionPresent) client.subscribe(this.down, { qos: 1 }, (err) => err || ask());
    clearTimeout(this.askAgain);
    // RC is QoS 0 on Mosquitto, and on RabbitMQ an older connection of this client id may have taken it: ask once
    // more, after subscribing again (Mosquitto 2.0.11 keeps a "present" session that no longer delivers the down
    // topic once the principal's dynamic-security client was re-created while connected, §15.3)
    this.askAgain = setTimeout(() => client.subscribe(this.down, { qos: 1 }, (err) => err || ask()), RC_ASK_AGAIN_MS);
  }

  settled(): void {
    clearTimeout(this.askAgain);
    this.askAgain = undefined;
    this.token = undefined;
  }

  protocolTopic(topic: string, payload: Uint8Array): string | undefined {
    if (topic !== this.down) return undefined;
    // the header byte says which protocol message it is (§15.2); anything else on the down topic is dropped as KX
    return protocolTopicOfDown(payload) ?? KX_TOPIC;
  }

  wrapGroup(_session: DeviceSecureSession, _topic: string, genv: Uint8Array): Uint8Array {
    return genv;
  }
}
