/**
 * Regression: a delivery to a connection that is already gone must stay
 * queued on the persistent session, never be refused.
 *
 * Aedes asks authorizeForward for every queued message it replays after a
 * CONNECT of a persistent session (and for live deliveries already on their
 * way). When the connection dies in the middle of that replay (after a broker
 * restart, Aedes can deliver one message live and from the queue; the second
 * PUBACK fails with "no such packet" and Aedes closes the client), the
 * broker's connection state is gone too. A refusal there makes Aedes clear the
 * message from the session queue (outgoingClearMessageId): every message still
 * waiting in the replay would be lost. The hook lets such a delivery through
 * instead: the write to the dead socket fails and the message stays queued for
 * the next connection. Here the client resets its socket as soon as the first
 * replayed PUBLISH arrives, with hundreds still queued behind it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import mqtt from 'mqtt';
import mqttPacket from 'mqtt-packet';
import type { RunningBroker } from '../../broker/server.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { TestDevice, subscribeQos, tempDir, testBroker, waitFor } from './helpers.js';

const CLIENT_ID = 'backend/queue';
const PASSWORD = 'backend-password';

function persistentBackend(port: number) {
  return mqtt.connect({
    host: '127.0.0.1',
    port,
    clientId: CLIENT_ID,
    username: 'backend',
    password: PASSWORD,
    protocolVersion: 4,
    clean: false,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: 5000,
  });
}

/** Resumes the session on a raw socket and resets it when the first replayed PUBLISH arrives. Resolves when closed. */
function resumeAndDieOnFirstPublish(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    let publishes = 0;
    parser.on('packet', (p) => {
      if (p.cmd !== 'publish') return;
      publishes++;
      if (publishes === 1) s.resetAndDestroy(); // no PUBACK, connection gone with the replay under way
    });
    s.on('data', (d) => parser.parse(d));
    s.on('error', () => {});
    s.once('close', () => resolve(publishes));
    s.once('connect', () =>
      s.write(
        mqttPacket.generate({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 4,
          clean: false,
          clientId: CLIENT_ID,
          keepalive: 30,
          username: 'backend',
          password: Buffer.from(PASSWORD),
        } as mqttPacket.IConnectPacket),
      ),
    );
    setTimeout(() => reject(new Error('raw client never closed')), 10_000).unref();
  });
}

describe('delivery to a connection that is gone', () => {
  const dir = tempDir();
  let broker: RunningBroker;
  let device: TestDevice;

  beforeAll(async () => {
    broker = await testBroker(dir.path);
    const key = (await broker.registry.addDevice('fg1', 'sensor')).key;
    await broker.registry.addAccount('backend', 'app', PASSWORD);
    device = new TestDevice(broker, 'fg1', key, new MemoryStorage());
    expect((await device.connect()).ok).toBe(true);
  });

  afterAll(async () => {
    await device.end();
    await broker.stop();
    dir.remove();
  });

  it('stays queued on the persistent session: every message reaches the next connection', async () => {
    const N = 400;
    // the backend's persistent session: subscribed at QoS 1, then offline
    const first = persistentBackend(broker.port);
    await new Promise<void>((resolve, reject) => {
      first.once('connect', () => resolve());
      first.once('error', reject);
    });
    expect(await subscribeQos(first, 'sensors/fg1/#')).toBe(1);
    await first.endAsync();

    // N readings routed while it is offline: all queued for it
    await Promise.all(Array.from({ length: N }, (_, i) => device.publish('sensors/fg1/t', `m${i}`, 1)));

    // resume, and lose the connection while the queue is being replayed
    const seenBeforeDeath = await resumeAndDieOnFirstPublish(broker.port);
    expect(seenBeforeDeath).toBeGreaterThanOrEqual(1);
    expect(seenBeforeDeath).toBeLessThan(N); // the replay really was cut short
    await new Promise((r) => setTimeout(r, 300)); // let the broker finish with the dead connection

    // the next connection gets every message (at least once: QoS 1)
    const got = new Set<string>();
    const second = persistentBackend(broker.port);
    second.on('message', (_t, payload) => got.add(payload.toString()));
    await new Promise<void>((resolve, reject) => {
      second.once('connect', (c) => (c.sessionPresent ? resolve() : reject(new Error('session not resumed'))));
      second.once('error', reject);
    });
    await waitFor(() => got.size === N, 10_000, `all ${N} queued messages`).catch(() => undefined);
    await second.endAsync();
    const missing = Array.from({ length: N }, (_, i) => `m${i}`).filter((m) => !got.has(m));
    expect(missing).toEqual([]);
  }, 30_000);
});
