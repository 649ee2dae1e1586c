/**
 * An on-path attacker between a device and the real broker (docs/protocol.md
 * §6.4, docs/threat-model.md §2): a TCP proxy that, once the device's link
 * drops, answers the device itself: CONNACK 0 and a PUBACK for every QoS 1
 * PUBLISH, keeping the RESUME token to release it later. The device runs the
 * firmware stack as on the chip (SecureMqttLink -> glue -> DeviceSecureSession
 * -> firmware MQTT client -> TCP). Only the broker's confirmation can stop
 * this: without it the device would install keys on the forged CONNACK, seal
 * its queued reading and drop it on the forged PUBACK.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { SecureMqttLink } from '../../firmware/app/secure-link.js';
import { SecureMqttClient } from '../../firmware/app/secure-mqtt.js';
import { createFirmwareMqttClient } from '../../firmware/app/firmware-mqtt.js';
import type { SecureLinkEvents } from '../../firmware/app/ports.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { createNodePlatform } from '../../host-sim/adapters/node-platform.js';
import { startBroker, type RunningBroker } from '../../broker/server.js';
import { tempDir, waitFor } from '../broker/helpers.js';
import { ReplayConnection, TcpProxy } from '../helpers/tcp-proxy.js';

const DEV = 'onpath01';
const T = `sensors/${DEV}/t`;
const work = tempDir('mqsec-onpath-');
let broker: RunningBroker;
let proxy: TcpProxy;
let app: mqtt.MqttClient;
const readings: string[] = [];

beforeAll(async () => {
  broker = await startBroker({ dataDir: work.path, port: 0, host: '127.0.0.1', logLevel: 'silent' });
  await broker.registry.addAccount('onpath-app', 'app', 'onpath-app-pw');
  await broker.syncRegistry();
  app = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { username: 'onpath-app', password: 'onpath-app-pw', clientId: 'onpath-app', reconnectPeriod: 0 });
  app.on('message', (_t, p) => readings.push(p.toString()));
  await app.subscribeAsync('sensors/#', { qos: 1 });
  proxy = await TcpProxy.start(broker.port);
});

afterAll(async () => {
  await app?.endAsync(true);
  await proxy?.stop();
  await broker?.stop();
  work.remove();
});

function events(): SecureLinkEvents & { downs: string[] } {
  const downs: string[] = [];
  return { downs, onMessage: () => {}, onDown: (e) => downs.push(e?.code ?? 'none') };
}

describe('on-path attacker answering CONNACK 0 and PUBACKs itself', () => {
  it('the device treats nothing as delivered without the broker confirmation; the reading stays queued and arrives once; the held-back token is useless and later refused', async () => {
    const key = (await broker.registry.addDevice(DEV, 'sensor')).key;
    await broker.syncRegistry();
    const storage = new MemoryStorage();
    const platform = createNodePlatform({ storage });
    const session = new DeviceSecureSession({ suite: createNobleSuite(platform.random), devId: DEV, deviceKey: key, storage, storageKey: 'mqsec-state' });
    const link = new SecureMqttLink({
      createGlue: (cb) => new SecureMqttClient({ session, ...cb }),
      createClient: (hooks) => createFirmwareMqttClient(platform, { endpoint: { host: '127.0.0.1', port: proxy.port }, connectTimeoutMs: 5000 }, hooks),
    });

    // genuine path: phase 1, one reading delivered
    const e1 = events();
    expect(await link.open(e1)).toEqual({ phase: 1 });
    await link.publish(T, new TextEncoder().encode('r1'));
    await waitFor(() => readings.includes('r1'), 5000, 'r1');

    // the attacker takes the path: the link drops, a reading is taken meanwhile
    proxy.mode = 'impersonate';
    proxy.cutAll();
    await waitFor(() => e1.downs.length === 1, 5000, 'link down');
    await expect(link.publish(T, new TextEncoder().encode('r2'))).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    expect(link.unacknowledged()).toBe(1);

    // reconnect through the attacker: CONNACK 0 arrives, no confirmation ever does
    let outcome = 'pending';
    const opening = link.open(events()).then(
      () => (outcome = 'opened'),
      (e) => (outcome = `refused ${e.code}`),
    );
    const forged = () => proxy.connections.at(-1)!;
    await waitFor(() => forged().down.length > 0, 5000, 'forged CONNACK sent');
    await new Promise((r) => setTimeout(r, 300));
    expect(outcome).toBe('pending'); // not ready on a CONNACK alone
    expect(forged().packets.map((p) => p.cmd)).toEqual(['connect']); // nothing sealed, nothing published
    expect(link.unacknowledged()).toBe(1); // the reading is still the device's to deliver
    const held = Buffer.concat(forged().up);

    // the device gives up on that connection (its step timeout; here the network drops it)
    proxy.cutAll();
    await opening;
    expect(outcome).toMatch(/^refused/);

    // the attacker releases the held-back token to the real broker: accepted once (it was never used),
    // but it comes with no envelope and its keys need the device's S_c: nothing reaches the app
    const late = await ReplayConnection.open(broker.port);
    late.write([held]);
    await waitFor(() => late.packets.some((p) => p.cmd === 'publish') || late.closed, 5000, 'late token answered');
    expect(late.packets[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    late.close();

    // the genuine path is back: phase 2 with a greater counter, and the kept reading arrives exactly once
    proxy.mode = 'forward';
    expect(await link.open(events())).toEqual({ phase: 2 });
    await waitFor(() => readings.includes('r2'), 5000, 'r2 after the attack');
    await waitFor(() => link.unacknowledged() === 0, 5000, 'r2 acknowledged by the broker');
    await new Promise((r) => setTimeout(r, 200));
    expect(readings.filter((r) => r.startsWith('r'))).toEqual(['r1', 'r2']);

    // released again, the held-back token is refused for good
    const again = await ReplayConnection.open(broker.port);
    await new Promise<void>((r) => {
      again.write([held]);
      waitFor(() => again.packets.length > 0 || again.closed, 5000, 'refusal').then(r, r);
    });
    expect(again.packets[0]).toMatchObject({ cmd: 'connack', returnCode: 4 });
    again.close();
    await link.close();
  });
});
