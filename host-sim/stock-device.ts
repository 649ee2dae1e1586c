/**
 * A device (or app principal) on a stock broker (docs/protocol.md §15),
 * driven through an unmodified MQTT.js 5 client: the same
 * DeviceSecureSession as against the mqsec broker, with phase 1 carried
 * over PUBLISH on the bootstrap credential (§15.2), phase 2 with the text
 * form of the RESUME token as the password and the key service's RC on the
 * persistent session (§15.3), and payloads sealed end to end under group
 * keys (§14; no channel trailer, a stock broker cannot check one).
 */
import net from 'node:net';
import { MqttClient, type IClientOptions } from 'mqtt';
import { MqsecError, asMqsecError } from '../firmware/core/errors.js';
import type { CryptoSuite } from '../firmware/crypto/suite.js';
import type { DeviceSecureSession } from '../firmware/secure/device.js';
import { GK_TOPIC, GroupKeyring, deriveKeyServiceKey, type OpenedGroupMessage } from '../firmware/secure/group.js';
import { deriveDeviceKeys } from '../firmware/secure/key-schedule.js';
import { toTextForm } from '../firmware/secure/messages.js';
import { bootPassword, bootUsername, downTopic, protocolTopicOfDown, upTopic } from '../firmware/secure/stock.js';

export interface StockDeviceOptions {
  url: string;
  id: string;
  /** K of the principal; only the bootstrap password and K_ks are derived from it here (the session holds its own copy). */
  key: Uint8Array;
  suite: CryptoSuite;
  session: DeviceSecureSession;
  /** How long to wait for KX2 / RC / the key delivery. Default 5 s. */
  timeoutMs?: number;
  /** Opened end-to-end readings on subscribed topics. */
  onMessage?(m: OpenedGroupMessage & { topic: string }): void;
  /** Anything dropped (bad envelope, forged delivery), with its code. */
  onDropped?(topic: string, e: MqsecError): void;
}

/** Bytes on the wire (MQTT framing included, TCP/IP headers not) per stage of the last connect(). */
export interface StockWireStats {
  /** Bootstrap connection: CONNECT, CONNACK, SUBSCRIBE, SUBACK, KX1, KX2, DISCONNECT. */
  phase1: { sent: number; received: number };
  /** Phase-2 connection until RC verified: CONNECT, CONNACK, [SUBSCRIBE, SUBACK], RC, PUBACK. */
  phase2: { sent: number; received: number };
  /** GKREQ up, GKDEL down (§14.6). */
  keys: { sent: number; received: number };
  /** MQTT packets the device sent per stage, in order (round trips: each one before the answer it waits for). */
  packets: { phase1: string[]; phase2: string[]; keys: string[] };
}

export interface StockConnectResult {
  /** 1 when this connect needed a phase 1 first. */
  phase1: boolean;
  /** CONNACK said the broker had kept the persistent session (no SUBSCRIBE needed for RC). */
  sessionPresent: boolean;
}

function waitConnect(c: MqttClient): Promise<{ sessionPresent: boolean }> {
  return new Promise((resolve, reject) => {
    const onConnect = (p: { sessionPresent?: boolean }) => {
      cleanup();
      resolve({ sessionPresent: !!p.sessionPresent });
    };
    const onError = (e: Error & { code?: unknown }) => {
      cleanup();
      reject(Object.assign(new MqsecError('CONNECTION_REFUSED', e.message), { returnCode: typeof e.code === 'number' ? e.code : undefined }));
    };
    const onClose = () => {
      cleanup();
      reject(new MqsecError('CONNECTION_CLOSED', 'closed before CONNACK'));
    };
    const cleanup = () => {
      c.off('connect', onConnect);
      c.off('error', onError);
      c.off('close', onClose);
    };
    c.on('connect', onConnect);
    c.on('error', onError);
    c.on('close', onClose);
  });
}

/** How long after CONNACK a device waits for RC before asking for it again (§15.3). */
const RC_ASK_AGAIN_MS = 1000;

export class StockDevice {
  private client: MqttClient | undefined;
  readonly keyring: GroupKeyring;
  private chain: Promise<unknown> = Promise.resolve();
  private waiter: { want: (kind: string) => boolean; resolve(): void; reject(e: MqsecError): void } | undefined;
  private readonly timeoutMs: number;
  private stage: 'phase1' | 'phase2' | 'keys' = 'phase1';
  stats: StockWireStats = StockDevice.emptyStats();

  private static emptyStats(): StockWireStats {
    return { phase1: { sent: 0, received: 0 }, phase2: { sent: 0, received: 0 }, keys: { sent: 0, received: 0 }, packets: { phase1: [], phase2: [], keys: [] } };
  }

  constructor(private readonly o: StockDeviceOptions) {
    this.keyring = new GroupKeyring({ suite: o.suite, id: o.id, keyServiceKey: deriveKeyServiceKey(o.suite, o.key, o.id) });
    this.timeoutMs = o.timeoutMs ?? 5000;
  }

  get connected(): boolean {
    return !!this.client?.connected;
  }

  /** Phase 2 if the session holds a ticket the key service installed; otherwise (or if refused) phase 1 first (§15.2). */
  async connect(): Promise<StockConnectResult> {
    let phase1 = false;
    this.stats = StockDevice.emptyStats();
    for (let attempt = 0; attempt < 3; attempt++) {
      const creds = await this.o.session.connectCredentials();
      if (creds.phase === 1) {
        await this.runPhase1(creds.password);
        phase1 = true;
        continue;
      }
      try {
        const r = await this.runPhase2(creds.password);
        return { phase1, sessionPresent: r.sessionPresent };
      } catch (e) {
        // §6.3: a refused token (4/5) dropped the ticket in the session: the loop runs phase 1
        if (this.o.session.hasTicket) throw e;
      }
    }
    throw new MqsecError('CONNECTION_REFUSED', 'no session after phase 1');
  }

  /** An MQTT.js client on a TCP socket whose bytes and packets are counted per stage. */
  private socket(opts: IClientOptions): MqttClient {
    const url = new URL(this.o.url);
    const build = () => {
      const sock = net.connect({ host: url.hostname, port: Number(url.port || 1883) });
      sock.setNoDelay(true);
      sock.on('data', (b: Buffer) => (this.stats[this.stage].received += b.length));
      const write = sock.write.bind(sock);
      sock.write = ((chunk: Buffer | string, ...rest: unknown[]) => {
        this.stats[this.stage].sent += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
        return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
      }) as typeof sock.write;
      return sock;
    };
    const c = new MqttClient(build, { protocolVersion: 4, reconnectPeriod: 0, keepalive: 60, connectTimeout: this.timeoutMs, manualConnect: true, ...opts });
    c.on('packetsend', (p: { cmd: string }) => this.stats.packets[this.stage].push(p.cmd));
    c.connect();
    return c;
  }

  /** §15.2: bootstrap credential, SUBSCRIBE to the down topic, KX1 up, KX2 (or HINT) down, close. */
  private async runPhase1(kx1: Uint8Array): Promise<void> {
    const { suite, key, id, session } = this.o;
    this.stage = 'phase1';
    const user = bootUsername(id);
    // §15.2: the bootstrap password comes from K_auth (§4.1)
    const { authKey, pskKey } = deriveDeviceKeys(suite, key, id);
    const password = bootPassword(suite, authKey, id);
    authKey.fill(0);
    pskKey.fill(0);
    const c = this.socket({ clientId: user, username: user, password, clean: true });
    try {
      try {
        await waitConnect(c);
      } catch (e) {
        await session.onConnack((e as { returnCode?: number }).returnCode ?? 3);
        throw e;
      }
      await session.onConnack(0);
      let result: 'kx2' | 'hint' | undefined;
      const done = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new MqsecError('TIMEOUT', 'no KX2 from the key service')), this.timeoutMs);
        c.on('message', (topic, payload) => {
          const p = new Uint8Array(payload);
          if (topic !== downTopic(id) || protocolTopicOfDown(p) === undefined) return;
          this.chain = this.chain.then(async () => {
            const r = await session.handleIncoming(protocolTopicOfDown(p)!, p);
            if (r.kind === 'handshake') result = 'kx2';
            else if (r.kind === 'counter-hint') result = 'hint';
            else return; // dropped: keep waiting for the genuine answer
            clearTimeout(timer);
            resolve();
          });
        });
      });
      await c.subscribeAsync(downTopic(id), { qos: 0 });
      await c.publishAsync(upTopic(id), Buffer.from(kx1), { qos: 0 });
      await done;
      void result;
    } finally {
      await c.endAsync().catch(() => undefined);
      session.onConnectionLost();
    }
  }

  /** §15.3: CONNECT with the token as password on the persistent session; RC (queued or live) makes the session ready; then the group keys (§14.6). */
  private async runPhase2(token: Uint8Array): Promise<{ sessionPresent: boolean }> {
    const { id, session } = this.o;
    this.stage = 'phase2';
    const c = this.socket({ clientId: id, username: id, password: toTextForm(token), clean: false });
    // CONNACK is applied to the session in the order it arrived: RC queued on the session can follow in the same segment
    c.once('connect', () => void this.serialise(() => session.onConnack(0)));
    c.on('message', (topic, payload) => this.onMessage(topic, new Uint8Array(payload)));
    let connack: { sessionPresent: boolean };
    try {
      const confirmed = this.expect('confirmed');
      confirmed.catch(() => undefined);
      connack = await waitConnect(c);
      if (!connack.sessionPresent) {
        // §15.3: no session, so no subscription: subscribe, then ask for the RC of this connection again
        // (the token is public once used; only this id's credentials may publish on its up topic)
        await c.subscribeAsync(downTopic(id), { qos: 1 });
        await c.publishAsync(upTopic(id), Buffer.from(token), { qos: 0 });
      }
      // RC can miss this connection (QoS 0 behind a dropped link; on a broker that queues it before the
      // login completes, an older connection of the same client id may take it): ask once more
      const again = setTimeout(() => {
        if (c.connected) c.publish(upTopic(id), Buffer.from(token), { qos: 0 });
      }, RC_ASK_AGAIN_MS);
      try {
        await confirmed;
      } finally {
        clearTimeout(again);
      }
    } catch (e) {
      const rc = (e as { returnCode?: number }).returnCode;
      if (rc !== undefined) await this.serialise(() => session.onConnack(rc));
      await c.endAsync(true).catch(() => undefined);
      session.onConnectionLost();
      this.waiter = undefined;
      throw asMqsecError(e);
    }
    this.client = c;
    c.on('close', () => {
      if (this.client === c) this.client = undefined;
      void this.serialise(() => session.onConnectionLost());
    });
    this.stage = 'keys';
    const keys = this.expect('keys');
    await c.publishAsync(upTopic(id), Buffer.from(this.keyring.request()), { qos: 0 });
    await keys;
    return connack;
  }

  private serialise<T>(op: () => Promise<T> | T): Promise<T> {
    const next = this.chain.then(op);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private expect(kind: 'confirmed' | 'keys'): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new MqsecError('TIMEOUT', `no ${kind === 'keys' ? 'key delivery' : 'RC'} from the key service`));
      }, this.timeoutMs);
      this.waiter = {
        want: (k) => k === kind,
        resolve: () => {
          clearTimeout(timer);
          this.waiter = undefined;
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          this.waiter = undefined;
          reject(e);
        },
      };
    });
  }

  private onMessage(topic: string, payload: Uint8Array): void {
    void this.serialise(async () => {
      if (topic === downTopic(this.o.id)) {
        const proto = protocolTopicOfDown(payload);
        if (proto === GK_TOPIC) {
          try {
            this.keyring.acceptDelivery(payload);
            if (this.waiter?.want('keys')) this.waiter.resolve();
          } catch (e) {
            this.o.onDropped?.(topic, asMqsecError(e));
          }
          return;
        }
        if (proto === undefined) return;
        const r = await this.o.session.handleIncoming(proto, payload);
        if (r.kind === 'confirmed' && this.waiter?.want('confirmed')) this.waiter.resolve();
        else if (r.kind === 'dropped') this.o.onDropped?.(topic, r.error);
        return;
      }
      try {
        const m = this.keyring.open(topic, payload);
        this.o.onMessage?.({ ...m, topic });
      } catch (e) {
        this.o.onDropped?.(topic, asMqsecError(e));
      }
    });
  }

  /** §14.4: seals under the group key of the topic and publishes the group envelope as it is. */
  async publish(topic: string, plaintext: Uint8Array, qos: 0 | 1 = 1): Promise<void> {
    const c = this.client;
    if (!c || this.o.session.state !== 'ready') throw new MqsecError('NOT_CONNECTED', 'not connected');
    await c.publishAsync(topic, Buffer.from(this.keyring.seal(topic, plaintext)), { qos });
  }

  async subscribe(filter: string, qos: 0 | 1 = 1): Promise<number> {
    const c = this.client;
    if (!c) throw new MqsecError('NOT_CONNECTED', 'not connected');
    const granted = await c.subscribeAsync(filter, { qos });
    return granted[0]?.qos ?? 128;
  }

  /** The raw MQTT client of the current connection (attack tests use it to try what the policy forbids). */
  get raw(): MqttClient | undefined {
    return this.client;
  }

  async end(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    if (c) await c.endAsync().catch(() => undefined);
    await this.serialise(() => this.o.session.onConnectionLost());
  }
}
