/**
 * A device (or app principal) on a stock broker (docs/protocol.md §15) in
 * the simulator: the firmware's StockConnector (firmware/app/stock-connector.ts)
 * with the firmware session and group keyring, over an unmodified MQTT.js 5
 * client whose bytes and packets are counted per stage (for the budgets).
 */
import net from 'node:net';
import { MqttClient, type IClientOptions } from 'mqtt';
import { StockConnector, type StockLink, type StockLinkOptions } from '../firmware/app/stock-connector.js';
import { MqsecError } from '../firmware/core/errors.js';
import type { CryptoSuite } from '../firmware/crypto/suite.js';
import type { DeviceSecureSession } from '../firmware/secure/device.js';
import { GroupKeyring, deriveKeyServiceKey, type OpenedGroupMessage } from '../firmware/secure/group.js';
import { deriveDeviceKeys } from '../firmware/secure/key-schedule.js';
import { bootPassword } from '../firmware/secure/stock.js';
import { utf8Decode } from '../firmware/core/utf8.js';

export interface StockDeviceOptions {
  url: string;
  id: string;
  /** K of the principal: K_auth (bootstrap password) and K_ks are derived from it here; the session holds its own copy. */
  key: Uint8Array;
  suite: CryptoSuite;
  session: DeviceSecureSession;
  /** How long to wait for KX2 / RC / the key delivery. Default 5 s. */
  timeoutMs?: number;
  onMessage?(m: OpenedGroupMessage & { topic: string }): void;
  onDropped?(topic: string, e: MqsecError): void;
}

/** Bytes on the wire (MQTT framing included, TCP/IP headers not) per stage of the last connect(). */
export interface StockWireStats {
  /** Bootstrap connection: CONNECT, CONNACK, SUBSCRIBE, SUBACK, KX1, KX2, DISCONNECT. */
  phase1: { sent: number; received: number };
  /** Phase-2 connection until RC verified: CONNECT, CONNACK, [SUBSCRIBE, SUBACK, RC request], RC. */
  phase2: { sent: number; received: number };
  /** GKREQ up, GKDEL down (§14.6). */
  keys: { sent: number; received: number };
  /** MQTT packets the device sent per stage, in order (round trips: each one before the answer it waits for). */
  packets: { phase1: string[]; phase2: string[]; keys: string[] };
}

type Stage = 'phase1' | 'phase2' | 'keys';

export class StockDevice {
  readonly keyring: GroupKeyring;
  private readonly connector: StockConnector;
  private client: MqttClient | undefined;
  private stage: Stage = 'phase1';
  stats: StockWireStats = StockDevice.emptyStats();

  private static emptyStats(): StockWireStats {
    return { phase1: { sent: 0, received: 0 }, phase2: { sent: 0, received: 0 }, keys: { sent: 0, received: 0 }, packets: { phase1: [], phase2: [], keys: [] } };
  }

  constructor(private readonly o: StockDeviceOptions) {
    this.keyring = new GroupKeyring({ suite: o.suite, id: o.id, keyServiceKey: deriveKeyServiceKey(o.suite, o.key, o.id) });
    const { authKey, pskKey } = deriveDeviceKeys(o.suite, o.key, o.id);
    const boot = bootPassword(o.suite, authKey, o.id);
    authKey.fill(0);
    pskKey.fill(0);
    this.connector = new StockConnector({
      id: o.id,
      session: o.session,
      keyring: this.keyring,
      bootPassword: boot,
      timer: { set: (f, ms) => setTimeout(f, ms), clear: (h) => clearTimeout(h as NodeJS.Timeout) },
      timeoutMs: o.timeoutMs,
      open: (lo) => this.open(lo),
      onMessage: o.onMessage,
      onDropped: o.onDropped,
      onConfirmed: () => (this.stage = 'keys'),
    });
  }

  /** The phase-2 connection is up (MQTT.js 5 leaves `connected` true after a server-side close when it does not reconnect: tracked here). */
  get connected(): boolean {
    return !!this.client && this.clientUp;
  }
  private clientUp = false;

  async connect(): Promise<{ phase1: boolean; sessionPresent: boolean }> {
    this.stats = StockDevice.emptyStats();
    return this.connector.connect();
  }

  /** One MQTT.js connection as a StockLink (resolves after CONNACK 0). */
  private open(lo: StockLinkOptions): Promise<StockLink> {
    this.stage = lo.stage;
    const c = this.socket({ clientId: lo.clientId, username: lo.username, password: utf8Decode(lo.password), clean: lo.cleanSession });
    // CONNACK first, in the order it arrived: a queued RC can follow in the same segment
    c.once('connect', () => lo.onConnack());
    c.on('message', (topic, payload) => lo.onMessage(topic, new Uint8Array(payload)));
    return new Promise<StockLink>((resolve, reject) => {
      const fail = (e: Error & { code?: unknown }) => {
        c.end(true);
        reject(Object.assign(new MqsecError('CONNECTION_REFUSED', e.message), { returnCode: typeof e.code === 'number' ? e.code : undefined }));
      };
      c.once('error', fail);
      c.once('close', () => fail(new Error('closed before CONNACK')));
      c.once('connect', (connack: { sessionPresent?: boolean }) => {
        c.removeAllListeners('error');
        c.removeAllListeners('close');
        c.on('error', () => {});
        c.on('close', () => {
          if (this.client === c) this.clientUp = false;
          lo.onClose();
        });
        if (lo.stage === 'phase2') {
          this.client = c;
          this.clientUp = true;
        }
        const link: StockLink = {
          sessionPresent: !!connack.sessionPresent,
          subscribe: (filter, qos) => c.subscribeAsync(filter, { qos }),
          publish: async (topic, payload, qos) => {
            await c.publishAsync(topic, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), { qos });
          },
          close: async () => {
            if (this.client === c) this.client = undefined;
            await c.endAsync();
          },
        };
        resolve(link);
      });
    });
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
    const c = new MqttClient(build, { protocolVersion: 4, reconnectPeriod: 0, keepalive: 60, connectTimeout: this.o.timeoutMs ?? 5000, manualConnect: true, ...opts });
    c.on('packetsend', (p: { cmd: string }) => this.stats.packets[this.stage].push(p.cmd));
    c.connect();
    return c;
  }

  /** §14.4: seals under the group key of the topic and publishes the group envelope as it is. */
  publish(topic: string, plaintext: Uint8Array, qos: 0 | 1 = 1): Promise<void> {
    return this.connector.publish(topic, plaintext, qos);
  }

  async subscribe(filter: string, qos: 0 | 1 = 1): Promise<number> {
    const granted = (await this.connector.subscribe(filter, qos)) as { qos: number }[];
    return granted[0]?.qos ?? 128;
  }

  /** The raw MQTT client of the current connection (attack tests use it to try what the policy forbids). */
  get raw(): MqttClient | undefined {
    return this.client;
  }

  end(): Promise<void> {
    return this.connector.close();
  }
}
