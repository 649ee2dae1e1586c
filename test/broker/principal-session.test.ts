/**
 * A principal (an app with a key) may keep a persistent MQTT session, like a
 * password account: QoS 1 messages routed while it is away are queued and
 * delivered at its next connection. The store keeps what the broker routed:
 * the group envelope of an end-to-end topic (docs/protocol.md §14), forwarded
 * unchanged, and the plaintext of a hop-by-hop topic, which the forward hook
 * seals for the connection that takes it, the replay of the queue included:
 * a queued message never goes out in clear, and the phase-2 confirmation goes
 * out ahead of the replay, so the client opens it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type mqttPacket from 'mqtt-packet';
import type { RunningBroker } from '../../broker/server.js';
import type { BrokerContext } from '../../broker/context.js';
import { createPreConnect } from '../../broker/hooks/pre-connect.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { CHANNEL_TRAILER_LENGTH } from '../../firmware/secure/group.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { TestDevice, tempDir, testBroker, waitFor } from './helpers.js';

describe('persistent session of a principal', () => {
  const dir = tempDir();
  let broker: RunningBroker;
  let proxy: TcpProxy;
  let dev: TestDevice;
  let app: TestDevice;

  beforeAll(async () => {
    broker = await testBroker(dir.path, { revisionPollMs: 50 });
    const r = broker.registry;
    await r.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
    await r.addRule('sensor', 'publish', 'status/%u');
    await r.addRule('app', 'subscribe', 'status/#');
    proxy = await TcpProxy.start(broker.port);
    dev = new TestDevice(broker, 'ps-dev1', (await r.addDevice('ps-dev1', 'sensor')).key, new MemoryStorage());
    app = new TestDevice({ host: '127.0.0.1', port: proxy.port }, 'ps-app1', (await r.addDevice('ps-app1', 'app')).key, new MemoryStorage());
    await broker.syncRegistry();
    expect((await dev.connect()).ok).toBe(true);
  });

  afterAll(async () => {
    await dev.end();
    await app.end();
    await proxy.stop();
    await broker.stop();
    dir.remove();
  });

  it('the queue of an app principal that asked for it survives its absence: the group envelope arrives unchanged, the hop-by-hop message sealed for the new connection (never in clear) after the confirmation', async () => {
    expect((await app.connect({ clean: false })).ok).toBe(true);
    expect(await app.subscribe('status/#')).toBe(1);
    expect(await app.subscribe('sensors/#')).toBe(1);
    await app.end();

    // routed while the app is away: a group envelope (trailer of the device's connection) and a hop-by-hop message
    const genv = new Uint8Array(40).fill(0x5a); // the broker checks only the channel trailer, never the envelope
    const wire = dev.session.wrapChannel('sensors/ps-dev1/t', genv);
    await dev.client.publishAsync('sensors/ps-dev1/t', Buffer.from(wire), { qos: 1 });
    const text = 'queued while away, hop by hop';
    await dev.publish('status/ps-dev1', text, 1);

    const r = await app.connect({ clean: false });
    expect(r).toMatchObject({ ok: true, phase: 2 });
    expect(app.sessionPresent).toBe(true);
    const down = () => proxy.connections.at(-1)!.downPackets.filter((p): p is mqttPacket.IPublishPacket => p.cmd === 'publish');
    await waitFor(() => down().some((p) => p.topic === 'sensors/ps-dev1/t') && down().some((p) => p.topic === 'status/ps-dev1'), 5000, 'queued messages');
    const e2e = down().find((p) => p.topic === 'sensors/ps-dev1/t')!;
    expect(e2e.payload.length).toBe(wire.length - CHANNEL_TRAILER_LENGTH);
    expect(new Uint8Array(e2e.payload as Buffer)).toEqual(genv); // forwarded untouched
    const hop = down().find((p) => p.topic === 'status/ps-dev1')!;
    expect(Buffer.from(hop.payload as Buffer).includes(Buffer.from('queued while away'))).toBe(false);
    expect(hop.payload.length).toBe(Buffer.byteLength(text) + 18); // an envelope (§8.1), not the plaintext
    // the confirmation went out ahead of the replayed queue, so the client opened the queued message
    const order = down().map((p) => p.topic);
    expect(order.indexOf('$mqsec/kx')).toBeGreaterThanOrEqual(0);
    expect(order.indexOf('$mqsec/kx')).toBeLessThan(order.indexOf('status/ps-dev1'));
    expect(order.filter((t) => t === '$mqsec/kx')).toHaveLength(1); // once
    await waitFor(() => app.received.length === 1, 2000, 'opened');
    expect(app.received).toEqual([{ topic: 'status/ps-dev1', payload: text }]);
  }, 20_000);
});

describe('principal sessions and the message store', () => {
  /** pre-connect's decision for one CONNECT. */
  async function clean(persistentPrincipals: boolean, clientId: string): Promise<boolean> {
    const ctx = {
      persistentPrincipals,
      registry: { getDevice: async (id: string) => (id === 'ps-principal' ? { id } : undefined) },
      metrics: { connects: { inc() {} }, rejects: { inc() {} } },
      limits: { maxKeepaliveSec: 120 },
      emptyClientIds: new WeakSet(),
      log: { info() {}, error() {} },
    } as unknown as BrokerContext;
    const packet = { cmd: 'connect', clientId, clean: false, keepalive: 30 } as Parameters<ReturnType<typeof createPreConnect>>[1];
    const ok = await new Promise<boolean>((resolve) => createPreConnect(ctx)({} as never, packet, (_e, success) => resolve(success)));
    expect(ok).toBe(true);
    return packet.clean === true;
  }
  it('a store that writes delivered copies back (the Redis store of --cluster) keeps principal sessions clean; accounts keep theirs', async () => {
    expect(await clean(true, 'ps-principal')).toBe(false);
    expect(await clean(false, 'ps-principal')).toBe(true);
    expect(await clean(false, 'an-account')).toBe(false);
  });
});
