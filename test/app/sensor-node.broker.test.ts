/**
 * The sensor-node app end to end under Node, the way the device runs it:
 * SensorNode -> SecureMqttLink -> SecureMqttClient (glue) -> firmware
 * MqttClient -> host TCP transport -> the real mqsec broker (startBroker) on
 * 127.0.0.1, with an unmodified MQTT.js client on an `app` account reading
 * the readings in plaintext and sending commands. Also through the stock
 * Moddable `mqtt` client's interface (StockMqttAdapter) over a stand-in that
 * behaves like the SDK client (QoS 0, onReady only on CONNACK 0).
 *
 * Checks: phase 1, sealed readings opened by the broker, commands sealed to
 * the device, phase 2 only after a broker restart, a revoked key refused.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import mqtt from 'mqtt';
import { SensorNode } from '../../firmware/app/sensor-node.js';
import { SecureMqttLink, type ConnectableMqttClient } from '../../firmware/app/secure-link.js';
import { SecureMqttClient } from '../../firmware/app/secure-mqtt.js';
import { createFirmwareMqttClient } from '../../firmware/app/firmware-mqtt.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { createNodePlatform } from '../../host-sim/adapters/node-platform.js';
import { StockMqttAdapter, type StockMqttClient, type StockMqttClientOptions } from '../../firmware/platform/moddable/stock-mqtt.js';
import { startBroker, type RunningBroker } from '../../broker/server.js';
import { tempDir, waitFor } from '../broker/helpers.js';
import { FakeNetwork, FakeSensor, FakeSleep } from './fakes.js';
import type { NodeState } from '../../firmware/app/sensor-node.js';

/**
 * Stand-in for the Moddable SDK `mqtt` client on Node: same interface and
 * semantics as modules/network/mqtt/mqtt.js (QoS 0 only, onConnected /
 * onReady / onMessage(topic, ArrayBuffer) / onClose, no reconnect), built on
 * MQTT.js so it talks to the real broker.
 */
class StockClientOnMqttJs implements StockMqttClient {
  onConnected?: () => void;
  onReady?: () => void;
  onMessage?: (topic: string, payload: ArrayBuffer) => void;
  onClose?: () => void;
  private ready = false;
  private readonly c: mqtt.MqttClient;
  constructor(o: StockMqttClientOptions) {
    this.c = mqtt.connect({
      host: o.host,
      port: o.port,
      clientId: o.id,
      username: o.user,
      password: o.password ? (Buffer.from(o.password) as unknown as string) : undefined,
      protocolVersion: 4,
      reconnectPeriod: 0,
      keepalive: Math.floor((o.timeout ?? 0) / 1000),
    });
    this.c.stream?.on?.('connect', () => this.onConnected?.());
    this.c.on('connect', () => {
      this.ready = true;
      this.onReady?.();
    });
    this.c.on('message', (topic, payload) => this.onMessage?.(topic, new Uint8Array(payload).buffer as ArrayBuffer));
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      this.ready = false;
      this.onClose?.();
      this.c.end(true);
    };
    this.c.on('close', close);
    this.c.on('error', close);
  }
  publish(topic: string, data: ArrayBuffer | string) {
    if (!this.ready) throw new Error('connection closed');
    this.c.publish(topic, Buffer.from(data as ArrayBuffer), { qos: 0 });
  }
  subscribe(topic: string) {
    if (!this.ready) throw new Error('connection closed');
    this.c.subscribe(topic, { qos: 0 });
  }
  close() {
    this.ready = false;
    this.c.end(false);
  }
}

interface Rig {
  node: SensorNode;
  states: string[];
  done: Promise<void>;
}

function startNode(b: { port: number }, devId: string, key: Uint8Array, storage: MemoryStorage, client: 'firmware' | 'stock'): Rig {
  const platform = createNodePlatform({ storage });
  const session = new DeviceSecureSession({ suite: createNobleSuite(platform.random), devId, deviceKey: key, storage, storageKey: 'mqsec-state' });
  const endpoint = { host: '127.0.0.1', port: b.port };
  const link = new SecureMqttLink({
    createGlue: (cb) => new SecureMqttClient({ session, ...cb }),
    createClient: (hooks): ConnectableMqttClient =>
      client === 'stock'
        ? new StockMqttAdapter({ Client: StockClientOnMqttJs, host: endpoint.host, port: endpoint.port, hooks })
        : createFirmwareMqttClient(platform, { endpoint, connectTimeoutMs: 5000 }, hooks),
  });
  const states: string[] = [];
  const node = new SensorNode({
    devId,
    link,
    network: new FakeNetwork(),
    sensor: new FakeSensor(['temperature']),
    sleep: new FakeSleep(false),
    storage,
    timer: platform.timer,
    random: platform.random,
    defaults: { intervalS: 3600, sleepMode: 'wait' }, // readings on demand ("sample"), not on a clock
    listenMs: 50,
    stepTimeoutMs: 5000,
    retry: { attempts: 3, baseMs: 50, maxMs: 200 },
    giveUpSleepMs: 3_600_000,
    onState: (s: NodeState, d?: string) => states.push(d ? `${s}:${d}` : s),
  });
  return { node, states, done: node.start() };
}

const work = tempDir('mqsec-app-e2e-');
let broker: RunningBroker;
let port = 0;
let app: mqtt.MqttClient;
const readings: { topic: string; body: any }[] = [];
const APP_PW = 'app-password-e2e';

async function phaseCount(kind: 'phase1' | 'phase2', result: 'ok' | 'fail' = 'ok') {
  return broker.metrics.value('mqsec_auth_total', { kind, result });
}

beforeAll(async () => {
  broker = await startBroker({ dataDir: work.path, port: 0, host: '127.0.0.1', logLevel: 'silent' });
  port = broker.port;
  await broker.registry.addAccount('e2e-app', 'app', APP_PW);
  await broker.syncRegistry();
  app = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { username: 'e2e-app', password: APP_PW, clientId: 'e2e-app', reconnectPeriod: 100 });
  app.on('message', (topic, payload) => readings.push({ topic, body: JSON.parse(payload.toString()) }));
  await app.subscribeAsync('sensors/#', { qos: 1 });
});

afterAll(async () => {
  await app?.endAsync(true);
  await broker?.stop();
  work.remove();
});

async function restartBroker() {
  await broker.stop();
  broker = await startBroker({ dataDir: work.path, port, host: '127.0.0.1', logLevel: 'silent' });
  await waitFor(() => app.connected, 10_000, 'app reconnect');
  await app.subscribeAsync('sensors/#', { qos: 1 });
}

describe.each(['firmware', 'stock'] as const)('sensor node through the %s MQTT client against the real broker', (client) => {
  const devId = `e2e-${client}`;
  let key: Uint8Array;
  const storage = new MemoryStorage();
  let rig: Rig;
  const mine = () => readings.filter((r) => r.topic.startsWith(`sensors/${devId}/`));

  it('phase 1, then sealed readings that the app account reads in plaintext', async () => {
    key = (await broker.registry.addDevice(devId, 'sensor')).key;
    await broker.syncRegistry();
    const p1 = await phaseCount('phase1');
    rig = startNode(broker, devId, key, storage, client);
    await waitFor(() => rig.node.state === 'waiting', 10_000, 'node waiting');
    expect(rig.node.stats.phase1).toBe(1);
    expect(await phaseCount('phase1')).toBe(p1 + 1);
    await waitFor(() => mine().length >= 1, 5000, 'first reading');
    expect(mine()[0]).toMatchObject({ topic: `sensors/${devId}/temperature`, body: { u: 'C', n: 0 } });
  });

  it('a command from the app reaches the device sealed and is obeyed', async () => {
    const before = mine().length;
    await app.publishAsync(`cmd/${devId}/sample`, '', { qos: 1 });
    await waitFor(() => mine().length > before, 5000, 'sampled reading');
    await app.publishAsync(`cmd/${devId}/interval`, '900', { qos: 1 });
    await waitFor(() => rig.node.currentSettings.intervalS === 900, 5000, 'interval command');
    expect(rig.node.stats.badCommands).toBe(0);
  });

  it('after a broker restart the node resumes with phase 2 only, and readings flow again', async () => {
    await restartBroker();
    await waitFor(() => rig.node.stats.phase2 >= 1 && rig.node.state === 'waiting', 15_000, 'phase 2');
    expect(await phaseCount('phase2')).toBeGreaterThanOrEqual(1);
    expect(await phaseCount('phase1')).toBe(0);
    const before = mine().length;
    await app.publishAsync(`cmd/${devId}/sample`, '', { qos: 1 });
    await waitFor(() => mine().length > before, 5000, 'reading after restart');
    const seqs = mine().map((r) => r.body.n);
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1]);
  });

  it('a revoked device is disconnected and refused; it backs off instead of hammering the broker', async () => {
    await broker.registry.revokeDevice(devId);
    await broker.syncRegistry();
    await waitFor(() => rig.node.state === 'backoff' && /gave up/.test(rig.states.at(-1) ?? ''), 15_000, 'give up after refusals');
    const refused = (await phaseCount('phase2', 'fail')) + (await phaseCount('phase1', 'fail'));
    expect(refused).toBeGreaterThanOrEqual(1);
    expect(rig.node.stats.failures).toBeGreaterThanOrEqual(3);
    expect(rig.node.stats.lastError).toBe('CONNECTION_REFUSED');
    const before = mine().length;
    await rig.node.stop();
    await rig.done;
    expect(mine().length).toBe(before);
    expect(rig.node.state).toBe('stopped');
  });
});

describe('a node whose flash was wiped comes back without an operator (docs/protocol.md §5.5)', () => {
  it('stale KX1 -> authenticated counter hint -> phase 1 past it; readings and commands flow; nothing accepted twice', async () => {
    const devId = 'e2e-wiped';
    const key = (await broker.registry.addDevice(devId, 'sensor')).key;
    await broker.syncRegistry();
    const mine = () => readings.filter((r) => r.topic.startsWith(`sensors/${devId}/`));
    // first life: phase 1, then a reboot (phase 2 from the next counter block)
    const flash = new MemoryStorage();
    for (let boot = 0; boot < 2; boot++) {
      const rig = startNode(broker, devId, key, flash, 'firmware');
      await waitFor(() => rig.node.state === 'waiting', 10_000, `boot ${boot} connected`);
      await rig.node.stop();
      await rig.done;
    }
    const highest = await broker.registry.getCounter(devId);
    expect(highest).toBeGreaterThanOrEqual(32);
    const hints = (await broker.metrics.value('mqsec_drops_total', { reason: 'counter-hint' })) ?? 0;
    const p1 = await phaseCount('phase1');
    // the flash is wiped (or the board replaced, same key): the node starts from counter 0
    const rig = startNode(broker, devId, key, new MemoryStorage(), 'firmware');
    cleanupRig = rig;
    await waitFor(() => rig.node.state === 'waiting', 15_000, 'wiped node back');
    expect(await broker.metrics.value('mqsec_drops_total', { reason: 'counter-hint' })).toBe(hints + 1);
    // one refused attempt (the hint: exactly one, counted above), then in; a loaded machine may add a timeout
    expect(rig.node.stats.failures).toBeGreaterThanOrEqual(1);
    expect(rig.node.stats.phase1).toBe(1);
    expect(await phaseCount('phase1')).toBe(p1 + 1);
    expect(await broker.registry.getCounter(devId)).toBeGreaterThan(highest); // only ever forward
    const before = mine().length;
    await app.publishAsync(`cmd/${devId}/sample`, '', { qos: 1 });
    await waitFor(() => mine().length > before, 5000, 'reading after the recovery');
    await rig.node.stop();
    await rig.done;
    cleanupRig = undefined;
  });
});

let cleanupRig: Rig | undefined;
afterAll(async () => {
  await cleanupRig?.node.stop();
});

