/**
 * The team's own device stack against the broker: the firmware MQTT client
 * (firmware/mqtt/client.ts) over the host TCP transport, driven by the secure
 * glue (firmware/app/secure-mqtt.ts) and DeviceSecureSession, talking to an
 * unmodified MQTT.js app through the broker.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecureMqttClient } from '../../firmware/app/secure-mqtt.js';
import { createFirmwareMqttClient } from '../../firmware/app/firmware-mqtt.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { DeviceSecureSession } from '../../firmware/secure/index.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { createNodePlatform } from '../../host-sim/adapters/node-platform.js';
import type { RunningBroker } from '../../broker/server.js';
import { TestApp, tempDir, testBroker, waitFor } from './helpers.js';
import { connectSecureMqttJs } from '../../host-sim/mqttjs-secure.js';

function firmwareDevice(broker: RunningBroker, devId: string, key: Uint8Array, storage: MemoryStorage) {
  const platform = createNodePlatform({ storage });
  const session = new DeviceSecureSession({ suite: createNodeCryptoSuite(), devId, deviceKey: key, storage, storageKey: 'mqsecstate' });
  const received: { topic: string; text: string }[] = [];
  const phases: number[] = [];
  const secure = new SecureMqttClient({
    session,
    onMessage: (topic, payload) => received.push({ topic, text: new TextDecoder().decode(payload) }),
    onReady: (phase) => phases.push(phase),
  });
  const client = createFirmwareMqttClient(
    { transport: platform.transport, timer: platform.timer, clock: platform.clock, random: platform.random, log: platform.log },
    { endpoint: { host: broker.host, port: broker.port }, keepaliveSec: 30 },
    secure.hooks,
  );
  secure.attach(client);
  return { secure, client, received, phases };
}

describe('firmware MQTT client + secure glue against the broker', () => {
  const dir = tempDir();
  let broker: RunningBroker;
  let key: Uint8Array;
  const storage = new MemoryStorage();
  let app: TestApp;

  beforeAll(async () => {
    broker = await testBroker(dir.path);
    key = (await broker.registry.addDevice('fw1', 'sensor')).key;
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
  });
  afterAll(async () => {
    await app.end();
    await broker.stop();
    dir.remove();
  });

  it('phase 1, QoS 1 readings to the app, a command back; then phase 2 after reconnect', async () => {
    const d = firmwareDevice(broker, 'fw1', key, storage);
    await d.client.start();
    await d.secure.whenReady();
    expect(d.phases).toEqual([1]);
    await d.secure.subscribe('cmd/fw1/#', 1);
    for (let i = 0; i < 20; i++) await d.secure.publish('sensors/fw1/temp', new TextEncoder().encode(`t${i}`), { qos: 1 });
    await waitFor(() => app.received.length === 20);
    expect(app.received.map((m) => m.payload)).toEqual(Array.from({ length: 20 }, (_, i) => `t${i}`));
    await app.client.publishAsync('cmd/fw1/led', 'blink', { qos: 1 });
    await waitFor(() => d.received.length === 1);
    expect(d.received[0]).toEqual({ topic: 'cmd/fw1/led', text: 'blink' });
    await d.client.disconnect();

    const again = firmwareDevice(broker, 'fw1', key, storage);
    await again.client.start();
    await again.secure.whenReady();
    expect(again.phases).toEqual([2]);
    await again.secure.publish('sensors/fw1/temp', new TextEncoder().encode('resumed'), { qos: 1 });
    await waitFor(() => app.received.some((m) => m.payload === 'resumed'));
    await again.client.disconnect();
  });

  it('host-sim glue over unmodified MQTT.js (text-form password): phase 1, then phase 2 on reconnect', async () => {
    const { key: k } = await broker.registry.addDevice('mj1', 'sensor');
    const st = new MemoryStorage();
    const session = new DeviceSecureSession({ suite: createNodeCryptoSuite(), devId: 'mj1', deviceKey: k, storage: st, storageKey: 'mqsecstate' });
    const dev = await connectSecureMqttJs(`mqtt://${broker.host}:${broker.port}`, session, { textPassword: true });
    expect(dev.lastPhase).toBe(1);
    await dev.publish('sensors/mj1/v', new TextEncoder().encode('via-mqttjs'), { qos: 1 });
    await waitFor(() => app.received.some((m) => m.payload === 'via-mqttjs'));
    await dev.reconnect();
    expect(dev.lastPhase).toBe(2);
    await dev.publish('sensors/mj1/v', new TextEncoder().encode('via-mqttjs-2'), { qos: 1 });
    await waitFor(() => app.received.some((m) => m.payload === 'via-mqttjs-2'));
    await dev.end();
  });
});
