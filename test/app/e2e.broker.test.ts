/**
 * The device side of end-to-end topic keys (docs/protocol.md §14) against the
 * real broker, the way the device runs it: SensorNode -> SecureMqttLink ->
 * SecureMqttClient with the device's GroupKeyring -> firmware MqttClient ->
 * TCP through a recording proxy -> `startBroker` with `sensors/%u/#` and
 * `cmd/%u/#` in mode e2e; the backend is an app principal on the SDK
 * (connectApp). Measures the per-message overhead on the real wire for a
 * 64-byte reading, e2e beside hop by hop, from the bytes the proxy recorded.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type mqttPacket from 'mqtt-packet';
import { SensorNode, type NodeState } from '../../firmware/app/sensor-node.js';
import { SecureMqttLink } from '../../firmware/app/secure-link.js';
import { SecureMqttClient } from '../../firmware/app/secure-mqtt.js';
import { createFirmwareMqttClient } from '../../firmware/app/firmware-mqtt.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { GroupKeyring, deriveKeyServiceKey, parseGroupEnvelope } from '../../firmware/secure/group.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { createNodePlatform } from '../../host-sim/adapters/node-platform.js';
import { startBroker, type RunningBroker } from '../../broker/server.js';
import { connectApp, type MqsecApp, type MessageInfo } from '../../sdk/index.js';
import { tempDir, waitFor } from '../broker/helpers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { FakeNetwork, FakeSensor, FakeSleep } from './fakes.js';

const DEV = 'e2e-node1';
const SEQ_BLOCK = 24; // publisher sequence numbers per connection: small, so a range runs out in this test
const work = tempDir('mqsec-app-e2e-dev-');
let broker: RunningBroker;
let port = 0;
let proxy: TcpProxy;
let devKey: Uint8Array;
let appKey: Uint8Array;
const appFlash = new MemoryStorage();
let app: MqsecApp;
const got: { topic: string; text: string; info: MessageInfo; raw: number }[] = [];
const appDropped: string[] = [];
let node: SensorNode;
let link: SecureMqttLink;
let glue: SecureMqttClient | undefined;
let done: Promise<void>;
const states: string[] = [];

async function startTheBroker() {
  broker = await startBroker({ dataDir: work.path, port, host: '127.0.0.1', logLevel: 'silent', groupSeqBlock: SEQ_BLOCK, revisionPollMs: 50 });
  port = broker.port;
}

async function startApp() {
  app = await connectApp({ url: `mqtt://127.0.0.1:${port}`, id: 'backend1', key: appKey, storage: appFlash });
  const raw: number[] = [];
  app.client.on('message', (_t, p) => raw.push(p.length));
  app.on('message', (topic, payload, info) => got.push({ topic, text: payload.toString('latin1'), info, raw: raw.shift() ?? -1 }));
  app.on('dropped', (topic, e) => appDropped.push(`${topic}:${e.code}`));
  await app.subscribe('sensors/#');
}

/** PUBLISH packets the device sent to the broker on `topic`, from the recorded TCP bytes. */
function devicePublishes(topic: string): mqttPacket.IPublishPacket[] {
  return proxy.connections.flatMap((c) => c.packets).filter((p): p is mqttPacket.IPublishPacket => p.cmd === 'publish' && p.topic === topic);
}

beforeAll(async () => {
  await startTheBroker();
  const r = broker.registry;
  await r.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
  await r.addRule('sensor', 'subscribe', 'cmd/%u/#', 'e2e');
  await r.addRule('sensor', 'publish', 'status/%u'); // hop by hop, for the comparison
  await r.addRule('app', 'subscribe', 'status/#');
  devKey = (await r.addDevice(DEV, 'sensor')).key;
  appKey = (await r.addDevice('backend1', 'app')).key;
  await broker.syncRegistry();
  proxy = await TcpProxy.start(port);
  await startApp();
  await app.subscribe('status/#');

  const storage = new MemoryStorage();
  const platform = createNodePlatform({ storage });
  const suite = createNobleSuite(platform.random);
  const session = new DeviceSecureSession({ suite, devId: DEV, deviceKey: devKey, storage, storageKey: 'mqsec-state' });
  const keyring = new GroupKeyring({ suite, id: DEV, keyServiceKey: deriveKeyServiceKey(suite, devKey, DEV) });
  link = new SecureMqttLink({
    createGlue: (cb) => (glue = new SecureMqttClient({ session, keyring, ...cb })),
    createClient: (hooks) => createFirmwareMqttClient(platform, { endpoint: { host: '127.0.0.1', port: proxy.port }, connectTimeoutMs: 5000 }, hooks),
  });
  node = new SensorNode({
    devId: DEV,
    link,
    network: new FakeNetwork(),
    sensor: new FakeSensor(['temperature']),
    sleep: new FakeSleep(false),
    storage,
    timer: platform.timer,
    random: platform.random,
    defaults: { intervalS: 3600, sleepMode: 'wait' },
    listenMs: 50,
    stepTimeoutMs: 5000,
    retry: { attempts: 20, baseMs: 50, maxMs: 300 },
    giveUpSleepMs: 3_600_000,
    onState: (s: NodeState, d?: string) => states.push(d ? `${s}:${d}` : s),
  });
  done = node.start();
}, 30_000);

afterAll(async () => {
  await node?.stop();
  await done;
  await app?.end().catch(() => {});
  await proxy?.stop();
  await broker?.stop();
  work.remove();
});

describe('device end to end (§14) against the real broker', () => {
  it('asks for its keys after the session is up and publishes its first reading end to end; the app opens it', async () => {
    await waitFor(() => node.state === 'waiting', 15_000, 'node waiting');
    await waitFor(() => got.some((m) => m.topic === `sensors/${DEV}/temperature`), 5000, 'first reading');
    const m = got.find((x) => x.topic === `sensors/${DEV}/temperature`)!;
    expect(m.info).toMatchObject({ mode: 'e2e', publisher: DEV });
    expect(JSON.parse(m.text)).toMatchObject({ n: 0, u: 'C' });
    expect(link.modeOf(`sensors/${DEV}/temperature`)).toBe('e2e');
    expect(link.modeOf(`cmd/${DEV}/interval`)).toBe('e2e');
    expect(link.modeOf(`status/${DEV}`)).toBe('hop');
    // the GKREQ went out before the first reading, on the device's own connection
    const up = proxy.connections[0].packets.filter((p) => p.cmd === 'publish').map((p) => (p as mqttPacket.IPublishPacket).topic);
    expect(up.indexOf('$mqsec/gk')).toBeGreaterThanOrEqual(0);
    expect(up.indexOf('$mqsec/gk')).toBeLessThan(up.indexOf(`sensors/${DEV}/temperature`));
    expect(appDropped).toEqual([]);
  });

  it('per-message overhead on the wire for a 64 B reading: e2e 27 B device -> broker (<= 30), 18 B broker -> app; hop by hop 18 B', async () => {
    const reading = new Uint8Array(64).fill(0x41);
    await link.publish(`sensors/${DEV}/raw`, reading, 1);
    await link.publish(`status/${DEV}`, reading, 1);
    await waitFor(() => got.some((m) => m.topic === `sensors/${DEV}/raw`) && got.some((m) => m.topic === `status/${DEV}`), 5000, 'both readings');
    const e2eUp = devicePublishes(`sensors/${DEV}/raw`);
    const hopUp = devicePublishes(`status/${DEV}`);
    expect(e2eUp).toHaveLength(1);
    expect(hopUp).toHaveLength(1);
    const e2eOverhead = e2eUp[0].payload.length - 64;
    const hopOverhead = hopUp[0].payload.length - 64;
    const e2eDown = got.find((m) => m.topic === `sensors/${DEV}/raw`)!;
    expect(e2eDown.text).toBe('A'.repeat(64));
    expect(e2eDown.info.mode).toBe('e2e');
    // eslint-disable-next-line no-console
    console.log('wire overhead for a 64 B reading', JSON.stringify({ e2e_device_to_broker: e2eOverhead, e2e_broker_to_app: e2eDown.raw - 64, hop_device_to_broker: hopOverhead }));
    expect(e2eOverhead).toBeLessThanOrEqual(30);
    expect(e2eOverhead).toBe(27); // kid 1 + seq 1 + tag 16 + channel trailer 9 (§14.8)
    expect(e2eDown.raw - 64).toBe(18); // the broker strips the trailer and nothing else
    expect(hopOverhead).toBe(18);
  });

  it('commands from the app arrive end to end and are obeyed', async () => {
    await app.publish(`cmd/${DEV}/interval`, '1200', { qos: 1 });
    await waitFor(() => node.currentSettings.intervalS === 1200, 5000, 'interval command');
    expect(node.stats.badCommands).toBe(0);
    expect(glue!.stats.e2eOpened).toBeGreaterThanOrEqual(1);
  });

  it('a re-key push (a new member of both groups) is applied at once; the next reading is under the new epoch', async () => {
    const epoch = () => app.groups().find((g) => g.filter === `sensors/${DEV}/#`)!.epoch;
    const before = epoch();
    const deliveries = glue!.stats.keyDeliveries;
    await broker.registry.addDevice('backend2', 'app');
    await broker.syncRegistry();
    await waitFor(() => glue!.stats.keyDeliveries > deliveries && epoch() > before, 2000, 're-key push');
    await link.publish(`sensors/${DEV}/raw`, new TextEncoder().encode('after re-key'), 1);
    await waitFor(() => got.some((m) => m.text === 'after re-key'), 5000, 'reading after re-key');
    expect(got.find((m) => m.text === 'after re-key')!.info.epoch).toBe(epoch());
    await app.publish(`cmd/${DEV}/interval`, '1300', { qos: 1 });
    await waitFor(() => node.currentSettings.intervalS === 1300, 5000, 'command after re-key');
  });

  it(`sequence ranges of ${SEQ_BLOCK}: the device asks for the next one on the same connection (§14.4); 60 readings, no reconnect, every one once`, async () => {
    const connectionsBefore = proxy.connections.length;
    const requestsBefore = glue!.stats.keyRequests;
    const texts = Array.from({ length: 60 }, (_, i) => `burst-${i}`);
    for (const t of texts) await link.publish(`sensors/${DEV}/raw`, new TextEncoder().encode(t), 1);
    await waitFor(() => texts.every((t) => got.some((m) => m.text === t)), 10_000, 'every burst reading');
    const counts = texts.map((t) => got.filter((m) => m.text === t).length);
    expect(counts.every((c) => c === 1)).toBe(true);
    expect(proxy.connections.length).toBe(connectionsBefore);
    expect(glue!.stats.keyRequests - requestsBefore).toBeGreaterThanOrEqual(Math.floor(60 / SEQ_BLOCK));
    // no publisher sequence number twice under one epoch
    const seen = new Set<string>();
    for (const p of devicePublishes(`sensors/${DEV}/raw`)) {
      const env = parseGroupEnvelope(new Uint8Array(p.payload as Buffer).subarray(0, p.payload.length - 9));
      const k = `${env.slot}/${env.epochLow}/${env.seq}`;
      expect(seen.has(k)).toBe(false);
      seen.add(k);
    }
    expect(appDropped).toEqual([]);
  });

  it('network drops and a broker restart: the device resumes (phase 2 + a new GKREQ) and its queued readings arrive once', async () => {
    const phase2 = node.stats.phase2;
    proxy.cutAll();
    await waitFor(() => node.stats.phase2 > phase2 && node.state === 'waiting', 15_000, 'resumed after a drop');
    await app.end();
    await broker.stop();
    const pending = link.publish(`sensors/${DEV}/raw`, new TextEncoder().encode('while down'), 1).catch(() => undefined);
    await startTheBroker();
    await startApp();
    await pending;
    await waitFor(() => got.some((m) => m.text === 'while down'), 15_000, 'reading queued across the restart');
    await link.publish(`sensors/${DEV}/raw`, new TextEncoder().encode('after restart'), 1);
    await waitFor(() => got.some((m) => m.text === 'after restart'), 5000, 'reading after restart');
    expect(got.filter((m) => m.text === 'while down')).toHaveLength(1);
    expect(node.stats.phase1).toBe(1); // phase 2 only after the first boot
    expect(appDropped).toEqual([]);
  }, 40_000);
});
