/**
 * Test helpers for the broker: a temporary data dir, a broker on a free
 * loopback port, mqsec devices driven by the protocol's DeviceSecureSession
 * over unmodified MQTT.js, and plain MQTT.js app clients.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import net from 'node:net';
import { DeviceSecureSession } from '../../firmware/secure/index.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import type { Storage } from '../../firmware/core/platform.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { startBroker, type BrokerOptions, type RunningBroker } from '../../broker/server.js';

export function tempDir(prefix = 'mqsec-broker-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export async function testBroker(dataDir: string, opts: Partial<BrokerOptions> = {}): Promise<RunningBroker> {
  return startBroker({ dataDir, port: 0, logLevel: 'silent', ...opts });
}

export interface Received {
  topic: string;
  payload: string;
}

/** Resolves when `pred` holds, polling on the event loop; rejects after `ms` (a hang guard, not a timing assertion). */
export async function waitFor(pred: () => boolean | Promise<boolean>, ms = 5000, what = 'condition'): Promise<void> {
  const start = Date.now();
  while (!(await pred())) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export class TestDevice {
  client!: MqttClient;
  readonly received: Received[] = [];
  readonly dropped: string[] = [];
  /** Counter hints the broker sent (docs/protocol.md §5.5). */
  readonly hints: number[] = [];
  phase: 1 | 2 | 0 = 0;
  ready = false;
  closed = false;
  connackCode: number | undefined;
  session: DeviceSecureSession;
  /** When set, KX3 is kept back (see sendHeldKx3) to model an attacker that stalls phase 1. */
  holdKx3 = false;
  sessionPresent: boolean | undefined;
  heldKx3: { topic: string; payload: Uint8Array } | undefined;
  /** The CONNECT password of the last connect (for replay tests). */
  lastPassword: Buffer | undefined;

  constructor(
    readonly broker: { host: string; port: number },
    readonly devId: string,
    key: Uint8Array,
    readonly storage: Storage = new MemoryStorage(),
  ) {
    // storageKey: the default 'mqsec.state' is refused by MemoryStorage's key charset
    this.session = new DeviceSecureSession({ suite: createNodeCryptoSuite(), devId, deviceKey: key, storage, storageKey: 'mqsecstate' });
  }

  /** Connects (phase 2 if a ticket is stored, else phase 1); resolves when ready or refused. */
  async connect(opts: { textPassword?: boolean; clean?: boolean } = {}): Promise<{ ok: boolean; code?: number; phase: 1 | 2 }> {
    const creds = await this.session.connectCredentials();
    this.ready = false;
    this.closed = false;
    this.connackCode = undefined;
    this.lastPassword = Buffer.from(creds.password);
    const password = opts.textPassword
      ? '~' + Buffer.from(creds.password).toString('base64url')
      : Buffer.from(creds.password);
    this.client = mqtt.connect({
      host: this.broker.host,
      port: this.broker.port,
      clientId: creds.clientId,
      username: creds.username,
      password: password as unknown as string,
      protocolVersion: 4,
      clean: opts.clean ?? true,
      keepalive: 30,
      reconnectPeriod: 0,
      connectTimeout: 5000,
    });
    this.client.once('connect', (connack) => (this.sessionPresent = connack.sessionPresent));
    return new Promise((resolve) => {
      let settled = false;
      const settle = (ok: boolean) => {
        if (settled) return;
        settled = true;
        resolve({ ok, code: this.connackCode, phase: creds.phase });
      };
      this.client.on('connect', async (connack) => {
        this.connackCode = connack.returnCode ?? 0;
        await this.session.onConnack(0);
        // phase 2: ready once the broker's confirmation (right behind the CONNACK) verified (§6.4)
      });
      this.client.on('error', async (err: Error & { code?: number }) => {
        if (typeof err.code === 'number') {
          this.connackCode = err.code;
          await this.session.onConnack(err.code);
        }
        settle(false);
      });
      this.client.on('close', () => {
        this.closed = true;
        this.ready = false;
        this.session.onConnectionLost();
        settle(false);
      });
      this.client.on('message', async (topic, payload) => {
        const r = await this.session.handleIncoming(topic, new Uint8Array(payload));
        if (r.kind === 'handshake' && this.holdKx3) {
          this.heldKx3 = r.reply;
          settle(true);
        } else if (r.kind === 'handshake') {
          this.client.publish(r.reply.topic, Buffer.from(r.reply.payload), { qos: 0 });
          this.ready = true;
          this.phase = 1;
          settle(true);
        } else if (r.kind === 'confirmed') {
          this.ready = true;
          this.phase = 2;
          settle(true);
        } else if (r.kind === 'counter-hint') {
          this.hints.push(r.counter);
        } else if (r.kind === 'message') {
          this.received.push({ topic: r.topic, payload: Buffer.from(r.payload).toString('utf8') });
        } else {
          this.dropped.push(`${r.topic}:${r.error.code}`);
        }
      });
    });
  }

  async sendHeldKx3(): Promise<void> {
    const r = this.heldKx3!;
    await this.client.publishAsync(r.topic, Buffer.from(r.payload), { qos: 0 });
    this.ready = true;
    this.phase = 1;
  }

  /** Seals and publishes; returns the envelope sent (for replay tests). */
  async publish(topic: string, text: string, qos: 0 | 1 = 1, retain = false): Promise<Buffer> {
    const envelope = Buffer.from(this.session.seal(topic, new TextEncoder().encode(text)));
    await this.client.publishAsync(topic, envelope, { qos, retain });
    return envelope;
  }

  async subscribe(filter: string): Promise<number> {
    return subscribeQos(this.client, filter);
  }

  async end(): Promise<void> {
    if (this.client && !this.closed) await this.client.endAsync();
  }
}

export class TestApp {
  readonly received: Received[] = [];
  closed = false;
  constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload) => this.received.push({ topic, payload: payload.toString('utf8') }));
    client.on('close', () => (this.closed = true));
  }

  static async connect(
    broker: { host: string; port: number },
    username: string,
    password: string,
    clientId = `${username}/${Math.random().toString(16).slice(2, 8)}`, // accounts own `name` and `name/...`
  ): Promise<TestApp> {
    const client = mqtt.connect({
      host: broker.host,
      port: broker.port,
      clientId,
      username,
      password,
      protocolVersion: 4,
      keepalive: 30,
      reconnectPeriod: 0,
      connectTimeout: 5000,
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    return new TestApp(client);
  }

  async subscribe(filter: string): Promise<number> {
    return subscribeQos(this.client, filter);
  }

  async end(): Promise<void> {
    if (!this.closed) await this.client.endAsync();
  }
}

/**
 * Tries an MQTT.js login and returns the CONNACK return code (0 = accepted).
 * `localAddress` picks the source address (e.g. 127.0.0.2, which a broker
 * configured with only 127.0.0.1 as local treats as remote).
 */
export async function tryLogin(
  broker: { host: string; port: number },
  opts: { clientId: string; username?: string; password?: string | Buffer; localAddress?: string },
): Promise<number | 'closed'> {
  const options = {
    host: broker.host,
    port: broker.port,
    clientId: opts.clientId,
    username: opts.username,
    password: opts.password as string | undefined,
    protocolVersion: 4 as const,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: 5000,
  };
  const client = opts.localAddress
    ? new mqtt.MqttClient(() => net.connect({ host: broker.host, port: broker.port, localAddress: opts.localAddress }), options)
    : mqtt.connect(options);
  const result = await new Promise<number | 'closed'>((resolve) => {
    client.once('connect', () => resolve(0));
    client.once('error', (e: Error & { code?: number }) => resolve(typeof e.code === 'number' ? e.code : 'closed'));
    client.once('close', () => resolve('closed'));
  });
  client.end(true);
  return result;
}

/**
 * Sends a recorded mqsec CONNECT password again and reports what the broker
 * did: the CONNACK code, every payload it sent on the protocol topic, and
 * whether it closed the connection by itself within `waitMs`.
 */
export async function replayLogin(
  broker: { host: string; port: number },
  opts: { clientId: string; password: Buffer },
  waitMs = 2000,
): Promise<{ connack: number | 'closed'; kx: Buffer[]; closedByBroker: boolean }> {
  const client = mqtt.connect({
    host: broker.host,
    port: broker.port,
    clientId: opts.clientId,
    username: opts.clientId,
    password: opts.password as unknown as string,
    protocolVersion: 4,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: 5000,
  });
  const kx: Buffer[] = [];
  client.on('message', (topic, payload) => {
    if (topic === '$mqsec/kx') kx.push(Buffer.from(payload));
  });
  let closedByBroker = false;
  const closed = new Promise<void>((resolve) => client.once('close', () => ((closedByBroker = true), resolve())));
  const connack = await new Promise<number | 'closed'>((resolve) => {
    client.once('connect', () => resolve(0));
    client.once('error', (e: Error & { code?: number }) => resolve(typeof e.code === 'number' ? e.code : 'closed'));
    client.once('close', () => resolve('closed'));
  });
  await Promise.race([closed, new Promise((r) => setTimeout(r, waitMs))]);
  client.end(true);
  return { connack, kx, closedByBroker };
}

/** SUBACK granted QoS (128 = refused); MQTT.js rejects on 128, so read the packet. */
export function subscribeQos(client: MqttClient, filter: string): Promise<number> {
  return new Promise((resolve, reject) => {
    client.subscribe(filter, { qos: 1 }, (err, granted) => {
      // on refusal MQTT.js reports the requested QoS in `granted`: trust the SUBACK packet
      const packet = (err as unknown as { packet?: { granted?: number[] } } | null)?.packet;
      if (packet?.granted) return resolve(packet.granted[0]!);
      if (granted && granted[0]) return resolve(granted[0].qos);
      if (err) return reject(err);
      resolve(128);
    });
  });
}
