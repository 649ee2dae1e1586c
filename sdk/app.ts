/**
 * The app SDK: a backend joins as an mqsec principal (not a password
 * account) on an unmodified MQTT.js client. It runs phase 1 / phase 2 with
 * its app key (docs/protocol.md §5, §6), asks the key service for its group
 * keys after every CONNACK (§14.6), and hands the application plaintext
 * `message` events; `publish` seals end to end (§14.4, with this connection's
 * channel trailer, §14.5) on topics of a group it writes, hop by hop (§8)
 * elsewhere.
 *
 *   import { connectApp } from 'mqsec';
 *   const app = await connectApp({ url: 'mqtt://127.0.0.1:1883', id: 'backend', key: '<hex from mqsec app add>' });
 *   app.on('message', (topic, payload, info) => ...);   // info.mode 'e2e' | 'hop', info.publisher
 *   await app.subscribe('sensors/#');
 *   await app.publish('cmd/dev1/interval', '30');
 */
import { EventEmitter } from 'node:events';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { fromHex } from '../firmware/core/bytes.js';
import { MqsecError, asMqsecError, fail } from '../firmware/core/errors.js';
import { MemoryStorage } from '../firmware/core/memory-storage.js';
import type { Storage } from '../firmware/core/platform.js';
import type { CryptoSuite } from '../firmware/crypto/suite.js';
import { DeviceSecureSession } from '../firmware/secure/device.js';
import { KX_TOPIC, RESERVED_PREFIX } from '../firmware/secure/constants.js';
import { GK_TOPIC, GroupKeyring, deriveKeyServiceKey } from '../firmware/secure/group.js';
import { createNodeCryptoSuite } from '../platform-node/crypto-suite.js';

export interface ConnectAppOptions {
  /** mqtt://host:port of the mqsec broker. */
  url: string;
  /** The app principal's id (its MQTT client id). */
  id: string;
  /** Its 32-byte key, as bytes or hex (printed once by `mqsec app add`). */
  key: Uint8Array | string;
  /** Where the counter and resumption ticket live (default: in memory, phase 1 on every start). */
  storage?: Storage;
  suite?: CryptoSuite;
  mqtt?: IClientOptions;
  /** How long to wait for the group keys after CONNACK. Default 5 s. */
  keyTimeoutMs?: number;
}

export interface MessageInfo {
  mode: 'e2e' | 'hop';
  /** For e2e: the writer's principal id as the key service lists it. */
  publisher?: string;
  group?: string;
  epoch?: number;
}

export interface AppEvents {
  message: [topic: string, payload: Buffer, info: MessageInfo];
  /** A message that failed a check (typed code: REPLAY, DECRYPT_FAILED, UNKNOWN_SESSION, ...). */
  dropped: [topic: string, error: MqsecError];
  /** Group keys arrived or changed (filters). */
  keys: [filters: string[]];
  close: [];
}

export class MqsecApp extends EventEmitter<AppEvents> {
  private keysWaiter: (() => void) | undefined;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    readonly client: MqttClient,
    readonly session: DeviceSecureSession,
    readonly keyring: GroupKeyring,
  ) {
    super();
  }

  /** Seals and publishes: end to end on a group this app writes, hop by hop elsewhere. */
  async publish(topic: string, payload: Uint8Array | string, opts: { qos?: 0 | 1; retain?: boolean } = {}): Promise<void> {
    if (topic.startsWith(RESERVED_PREFIX)) fail('NOT_AUTHORIZED', 'reserved topic');
    const pt = typeof payload === 'string' ? new TextEncoder().encode(payload) : payload;
    let wire: Uint8Array;
    if (this.keyring.covers(topic)) {
      // §14.5: the trailer belongs to this connection, so it is made right before the write
      wire = this.session.wrapChannel(topic, this.keyring.seal(topic, pt));
      if (this.keyring.wantsRange) this.requestKeys(); // §14.4: the next range before this one runs out
    } else {
      wire = this.session.seal(topic, pt);
    }
    await this.client.publishAsync(topic, Buffer.from(wire.buffer, wire.byteOffset, wire.byteLength), { qos: opts.qos ?? 1, retain: opts.retain ?? false });
  }

  async subscribe(filter: string, qos: 0 | 1 = 1): Promise<number> {
    const g = await this.client.subscribeAsync(filter, { qos });
    return g[0]?.qos ?? 128;
  }

  /** Groups this app holds keys for. */
  groups() {
    return this.keyring.list();
  }

  async end(): Promise<void> {
    if (this.client.connected) await this.client.endAsync();
    else this.client.end(true); // already closed: nothing to say goodbye to
    this.keyring.destroy();
  }

  /** @internal events are applied one after the other, in arrival order */
  enqueue(f: () => Promise<void>): void {
    this.chain = this.chain.then(f, f);
  }

  /** @internal */
  incoming(topic: string, payload: Uint8Array): void {
    this.enqueue(async () => {
      if (topic === GK_TOPIC) {
        try {
          const changed = this.keyring.acceptDelivery(payload);
          this.keysWaiter?.();
          if (changed.length) this.emit('keys', changed);
        } catch (e) {
          this.emit('dropped', topic, asMqsecError(e));
        }
        return;
      }
      if (topic !== KX_TOPIC && this.keyring.covers(topic)) {
        try {
          const m = this.keyring.open(topic, payload);
          this.emit('message', topic, Buffer.from(m.plaintext), { mode: 'e2e', publisher: m.publisher, group: m.group, epoch: m.epoch });
        } catch (e) {
          const err = asMqsecError(e);
          // an epoch this app lacks: the keys moved on, ask again (§14.6)
          if (err.code === 'UNKNOWN_SESSION') this.requestKeys();
          this.emit('dropped', topic, err);
        }
        return;
      }
      const r = await this.session.handleIncoming(topic, payload);
      if (r.kind === 'handshake') {
        await this.client.publishAsync(r.reply.topic, Buffer.from(r.reply.payload), { qos: 0 });
        this.requestKeys();
      } else if (r.kind === 'confirmed') {
        this.requestKeys(); // phase 2 is ready at the broker's confirmation (§6.4)
      } else if (r.kind === 'message') this.emit('message', topic, Buffer.from(r.payload), { mode: 'hop' });
      else if (r.kind === 'dropped') this.emit('dropped', topic, r.error);
    });
  }

  /** @internal */
  requestKeys(): void {
    if (this.session.state !== 'ready') return;
    this.client.publish(GK_TOPIC, Buffer.from(this.keyring.request()), { qos: 0 });
  }

  /** @internal */
  waitKeys(ms: number): Promise<void> {
    if (this.keyring.hasKeys) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new MqsecError('TIMEOUT', 'no group keys from the key service')), ms);
      this.keysWaiter = () => {
        clearTimeout(t);
        this.keysWaiter = undefined;
        resolve();
      };
    });
  }
}

/** Connects, authenticates (phase 1 or 2) and waits for the group keys. No automatic reconnect: call again. */
export async function connectApp(opts: ConnectAppOptions): Promise<MqsecApp> {
  const suite = opts.suite ?? createNodeCryptoSuite();
  const key = typeof opts.key === 'string' ? fromHex(opts.key) : opts.key.slice();
  const session = new DeviceSecureSession({ suite, devId: opts.id, deviceKey: key, storage: opts.storage ?? new MemoryStorage(), storageKey: 'mqsecstate' });
  const keyring = new GroupKeyring({ suite, id: opts.id, keyServiceKey: deriveKeyServiceKey(suite, key, opts.id) });
  key.fill(0);
  const creds = await session.connectCredentials();
  const client = mqtt.connect(opts.url, {
    protocolVersion: 4,
    clean: true,
    keepalive: 60,
    reconnectPeriod: 0, // a one-time password must never be replayed by MQTT.js
    connectTimeout: 10_000,
    ...opts.mqtt,
    clientId: creds.clientId,
    username: creds.username,
    password: Buffer.from(creds.password) as unknown as string,
  });
  const app = new MqsecApp(client, session, keyring);
  // attached before CONNACK: KX2 can arrive in the same read as CONNACK, and events are applied in order
  client.on('message', (topic, payload) => app.incoming(topic, new Uint8Array(payload)));
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => {
      app.enqueue(async () => {
        await session.onConnack(0);
        if (creds.phase === 2) app.requestKeys();
        resolve();
      });
    });
    client.once('error', async (err: Error & { code?: number }) => {
      if (typeof err.code === 'number') await session.onConnack(err.code);
      reject(err);
    });
    client.once('close', () => reject(new MqsecError('CONNECTION_CLOSED', 'closed before CONNACK')));
  });
  client.on('close', () => {
    session.onConnectionLost();
    keyring.onConnectionLost();
    app.emit('close');
  });
  await app.waitKeys(opts.keyTimeoutMs ?? 5000).catch((e) => {
    client.end(true);
    throw e;
  });
  return app;
}
