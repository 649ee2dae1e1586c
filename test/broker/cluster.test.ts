/**
 * Several broker nodes over a real redis-server (broker/cluster): routing
 * between nodes, phase 1 on one node and phase 2 on another, the §8.5 grace
 * state handed from node to node, and a Redis outage (CONNACK 3 for new
 * logins, live sessions kept, nothing acknowledged lost, recovery by itself).
 * The nodes share one registry (SQLite in one data directory, as nodes on one
 * host may); each is its own Aedes with its own ServerHandshake.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import mqtt from 'mqtt';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { listNodes } from '../../broker/cluster/redis-state.js';
import type { RunningBroker } from '../../broker/server.js';
import { hasRedis, startRedis, type RunningRedis } from '../helpers/redis.js';
import { tempDir, testBroker, TestApp, TestDevice, waitFor } from './helpers.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { MemoryKeyServiceStore } from '../../broker/keyservice/store.js';

async function persistentBackend(node: { host: string; port: number }): Promise<TestApp> {
  const client = mqtt.connect({ host: node.host, port: node.port, clientId: 'backend/persistent', username: 'backend', password: 'backend-password', clean: false, reconnectPeriod: 0, protocolVersion: 4 });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  const app = new TestApp(client);
  await client.subscribeAsync('sensors/#', { qos: 1 });
  return app;
}

const run = hasRedis() ? describe : describe.skip;

run('broker nodes over Redis', () => {
  let redis: RunningRedis;
  let dir: { path: string; remove(): void };
  let a: RunningBroker;
  let b: RunningBroker;
  /** Provisioning: cluster nodes run with an external key service (§14.12); none runs here (hop-by-hop only), K_ks is kept in memory. */
  let admin: SqliteRegistry;

  beforeAll(async () => {
    redis = await startRedis();
    dir = tempDir();
    a = await testBroker(dir.path, { keyService: 'external', cluster: { url: redis.url, nodeId: 'node-a' } });
    b = await testBroker(dir.path, { keyService: 'external', cluster: { url: redis.url, nodeId: 'node-b' } });
    admin = SqliteRegistry.open(dir.path, { memberKeys: new MemoryKeyServiceStore() });
    await a.registry.addAccount('backend', 'app', 'backend-password');
    a.syncRegistry();
    await b.syncRegistry();
  }, 30_000);

  afterAll(async () => {
    await admin?.close();
    await a?.stop();
    await b?.stop();
    await redis?.stop();
    dir?.remove();
  });

  it('a reading published on node B reaches a backend on node A; phase 1 on A, phase 2 on B', async () => {
    const { key } = await admin.addDevice('c1', 'sensor');
    const app = await TestApp.connect(a, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const storage = new MemoryStorage();
    const onA = new TestDevice(a, 'c1', key, storage);
    expect(await onA.connect()).toMatchObject({ ok: true, phase: 1 });
    await onA.publish('sensors/c1/t', 'from-a');
    await onA.end();
    const onB = new TestDevice(b, 'c1', key, storage); // same device (its storage holds the ticket)
    expect(await onB.connect()).toMatchObject({ ok: true, phase: 2 });
    await onB.publish('sensors/c1/t', 'from-b');
    await waitFor(() => app.received.length === 2, 5000, 'both readings at the backend');
    expect(app.received.map((m) => m.payload)).toEqual(['from-a', 'from-b']);
    expect(await b.metrics.value('mqsec_auth_total', { kind: 'phase2', result: 'ok' })).toBe(1);
    await onB.end();
    await app.end();
  });

  it('the QoS 1 grace state moves with the device: resent unchanged on the other node, routed once, its copy refused', async () => {
    const { key } = await admin.addDevice('c2', 'sensor');
    await b.syncRegistry();
    const app = await TestApp.connect(b, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const storage = new MemoryStorage();
    const onA = new TestDevice(a, 'c2', key, storage);
    await onA.connect();
    const delivered = await onA.publish('sensors/c2/t', 'before'); // arrived; its PUBACK "lost"
    await waitFor(() => app.received.length === 1);
    const inflight = Buffer.from(onA.session.seal('sensors/c2/t', new TextEncoder().encode('in-flight'))); // never arrived
    await a.context.cluster!.grace.settle();
    // the connection to A is gone (A's state in memory does not count: B has only the shared store)
    onA.client.stream.destroy();
    await waitFor(() => onA.closed);
    const onB = new TestDevice(b, 'c2', key, storage);
    expect(await onB.connect()).toMatchObject({ ok: true, phase: 2 });
    for (const env of [delivered, inflight, delivered, inflight]) await onB.client.publishAsync('sensors/c2/t', env, { qos: 1, dup: true } as never);
    await onB.publish('sensors/c2/t', 'fresh');
    await waitFor(() => app.received.some((m) => m.payload === 'fresh'));
    expect(app.received.map((m) => m.payload)).toEqual(['before', 'in-flight', 'fresh']);
    expect(await b.metrics.value('mqsec_drops_total', { reason: 'replay' })).toBe(3);
    expect(await b.metrics.value('mqsec_drops_total', { reason: 'stale-epoch' })).toBe(0);
    await onB.end();
    await app.end();
  });

  it('a node killed after opening a reading but before routing it: the unchanged resend on the other node is routed, not refused as a copy', async () => {
    // Node A opens the envelope (its replay window moves) but dies before the message is routed
    // (held here in A's emitter, then failed). The window A shares for the device must not yet
    // hold that envelope: else B refuses the resend as a replay, acknowledges it, and the reading
    // the device then deletes was routed nowhere.
    const { key } = await admin.addDevice('c7', 'sensor');
    await b.syncRegistry();
    const app = await TestApp.connect(b, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const storage = new MemoryStorage();
    const onA = new TestDevice(a, 'c7', key, storage);
    await onA.connect();
    await onA.publish('sensors/c7/t', 'routed');
    await waitFor(() => app.received.length === 1);
    const emitter = (a.aedes as unknown as { mq: unknown }).mq as { emit(m: { topic: string }, done?: (e?: Error) => void): unknown };
    const emit = emitter.emit;
    let held: ((e: Error) => void) | undefined;
    emitter.emit = ((m: { topic: string }, done?: (e?: Error) => void) => {
      if (m.topic !== 'sensors/c7/t') return emit.call(emitter, m, done);
      held = (e) => done?.(e);
      return emitter;
    }) as typeof emitter.emit;
    try {
      const stalled = Buffer.from(onA.session.seal('sensors/c7/t', new TextEncoder().encode('opened-not-routed')));
      let ackedByA = false;
      onA.client.publish('sensors/c7/t', stalled, { qos: 1 }, (err) => (ackedByA = !err));
      await waitFor(() => held !== undefined, 5000, 'A opened the envelope and is routing it');
      await a.context.cluster!.grace.settle();
      onA.client.stream.destroy(); // A is gone for this device before the message left it
      await waitFor(() => onA.closed);
      expect(ackedByA).toBe(false);
      const onB = new TestDevice(b, 'c7', key, storage);
      expect(await onB.connect()).toMatchObject({ ok: true, phase: 2 });
      await onB.client.publishAsync('sensors/c7/t', stalled, { qos: 1, dup: true } as never); // resent unchanged (§8.5)
      await onB.publish('sensors/c7/t', 'fresh');
      await waitFor(() => app.received.some((m) => m.payload === 'fresh'));
      expect(app.received.map((m) => m.payload)).toEqual(['routed', 'opened-not-routed', 'fresh']);
      await onB.end();
    } finally {
      emitter.emit = emit;
      held?.(new Error('node killed'));
      await app.end();
    }
  });

  it('two readings in flight, the later one routed first: the window shared after it leaves out the one still on its way, whose resend on the other node is routed', async () => {
    // The window is read when the shared write runs. Written after reading 2 was routed while
    // reading 1 (opened first) was still being routed, it must not hold reading 1: node A killed
    // then would leave a window that makes B refuse reading 1's resend as a copy, with a PUBACK.
    const { key } = await admin.addDevice('c8', 'sensor');
    await b.syncRegistry();
    const app = await TestApp.connect(b, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const storage = new MemoryStorage();
    const onA = new TestDevice(a, 'c8', key, storage);
    await onA.connect();
    const emitter = (a.aedes as unknown as { mq: unknown }).mq as { emit(m: { topic: string }, done?: (e?: Error) => void): unknown };
    const emit = emitter.emit;
    let held: ((e: Error) => void) | undefined;
    let cleanupB: (() => Promise<unknown>) | undefined;
    emitter.emit = ((m: { topic: string }, done?: (e?: Error) => void) => {
      if (m.topic !== 'sensors/c8/slow') return emit.call(emitter, m, done);
      held = (e) => done?.(e);
      return emitter;
    }) as typeof emitter.emit;
    try {
      const first = Buffer.from(onA.session.seal('sensors/c8/slow', new TextEncoder().encode('still-routing')));
      const second = Buffer.from(onA.session.seal('sensors/c8/t', new TextEncoder().encode('routed')));
      onA.client.publish('sensors/c8/slow', first, { qos: 1 });
      await waitFor(() => held !== undefined, 5000, 'A opened reading 1 and is routing it');
      await onA.client.publishAsync('sensors/c8/t', second, { qos: 1 }); // PUBACK: routed, and the window written after it
      await waitFor(() => app.received.some((m) => m.payload === 'routed'));
      await a.context.cluster!.grace.settle();
      onA.client.stream.destroy(); // A is gone for this device before reading 1 left it
      await waitFor(() => onA.closed);
      const onB = new TestDevice(b, 'c8', key, storage);
      cleanupB = () => onB.end();
      expect(await onB.connect()).toMatchObject({ ok: true, phase: 2 });
      await onB.client.publishAsync('sensors/c8/slow', first, { qos: 1, dup: true } as never); // resent unchanged (§8.5)
      await onB.client.publishAsync('sensors/c8/t', second, { qos: 1, dup: true } as never); // a copy: refused by the shared window
      await onB.publish('sensors/c8/t', 'fresh');
      await waitFor(() => app.received.some((m) => m.payload === 'fresh'));
      expect(app.received.map((m) => m.payload)).toEqual(['routed', 'still-routing', 'fresh']);
    } finally {
      await cleanupB?.().catch(() => {});
      emitter.emit = emit;
      held?.(new Error('node killed'));
      await app.end();
    }
  });

  it('the shared grace record is sealed: no key bytes in Redis, and a record of another key does not open', async () => {
    const { key } = await admin.addDevice('c3', 'sensor');
    await b.syncRegistry();
    const storage = new MemoryStorage();
    const d = new TestDevice(a, 'c3', key, storage);
    await d.connect();
    await d.publish('sensors/c3/t', 'x');
    await a.context.cluster!.grace.settle();
    const r = new Redis(redis.url);
    try {
      const raw = await r.get('mqsec:grace:c3');
      expect(raw).toBeTruthy();
      const st = JSON.parse(raw!) as { k: string; s: string };
      // the session's receive key is what A's handshake holds; it must not be in the record in clear
      const rx = a.context.handshake.exportGrace().find((g) => g.devId === 'c3')!.rx;
      expect(Buffer.from(st.s, 'base64').includes(Buffer.from(rx.key))).toBe(false);
      // rotated key: the record (made under the old key) is not adopted by the next node
      expect(await b.context.cluster!.grace.adopt(b.context.handshake, 'c3', 'another/key')).toBe(false);
      expect(await b.context.cluster!.grace.adopt(b.context.handshake, 'c3', st.k)).toBe(true);
      // tampered: skipped, not adopted
      const bad = Buffer.from(st.s, 'base64');
      bad[bad.length - 1]! ^= 1;
      await r.set('mqsec:grace:c3', JSON.stringify({ ...st, s: bad.toString('base64') }));
      expect(await b.context.cluster!.grace.adopt(b.context.handshake, 'c3', st.k)).toBe(false);
    } finally {
      r.disconnect();
      await d.end();
    }
  });

  it('the node directory lists both nodes with their device sessions', async () => {
    const { key } = await admin.addDevice('c4', 'sensor');
    const d = new TestDevice(a, 'c4', key);
    await d.connect();
    await waitFor(() => false, 0).catch(() => {});
    let nodes = await listNodes(redis.url);
    for (let i = 0; i < 40 && !nodes.find((n) => n.id === 'node-a' && n.devices === 1); i++) {
      await new Promise((r) => setTimeout(r, 100));
      nodes = await listNodes(redis.url);
    }
    expect(nodes.map((n) => n.id)).toEqual(['node-a', 'node-b']);
    expect(nodes.every((n) => n.up && n.pid === process.pid)).toBe(true);
    expect(nodes.find((n) => n.id === 'node-a')).toMatchObject({ devices: 1, port: a.port });
    expect(nodes.find((n) => n.id === 'node-b')).toMatchObject({ devices: 0, port: b.port });
    await d.end();
  });

  it('Redis away: new logins get CONNACK 3, a live session stays and its reading is acknowledged once Redis is back; logins work again', async () => {
    const { key } = await admin.addDevice('c5', 'sensor');
    const { key: key6 } = await admin.addDevice('c6', 'sensor');
    await b.syncRegistry();
    // a backend as the simulator's verifier is one: a persistent session with a QoS 1 subscription
    const app = await persistentBackend(b);
    const live = new TestDevice(a, 'c5', key);
    expect(await live.connect()).toMatchObject({ ok: true });
    await redis.pause();
    await waitFor(() => !a.context.cluster!.state.available() && !b.context.cluster!.state.available(), 5000, 'nodes notice the outage');
    const newcomer = new TestDevice(b, 'c6', key6);
    expect(await newcomer.connect()).toMatchObject({ ok: false, code: 3 });
    expect(await a.metrics.value('mqsec_cluster_store_up')).toBe(0);
    let acked = false;
    live.client.publish('sensors/c5/t', Buffer.from(live.session.seal('sensors/c5/t', new TextEncoder().encode('during'))), { qos: 1 }, (err) => (acked = !err));
    await new Promise((r) => setTimeout(r, 500));
    expect(acked).toBe(false); // not acknowledged while it could not be queued for the backend
    expect(live.closed).toBe(false); // the live session is kept
    await redis.resume();
    await waitFor(() => a.context.cluster!.state.available() && b.context.cluster!.state.available(), 10_000, 'nodes reconnect by themselves');
    await waitFor(() => acked, 10_000, 'PUBACK after the outage');
    // the backend on B was closed after the routing gap (persistent session) and reconnects: connect again as it would
    await waitFor(() => app.closed, 5000, 'persistent session closed after the routing gap');
    const back = await persistentBackend(b);
    await waitFor(() => [...app.received, ...back.received].some((m) => m.payload === 'during'), 10_000, 'reading delivered');
    expect(await newcomer.connect()).toMatchObject({ ok: true });
    expect(await b.metrics.value('mqsec_cluster_store_up')).toBe(1);
    // every metric of a node carries its id
    expect(await b.metrics.registry.metrics()).toMatch(/mqsec_cluster_store_up\{node="node-b"\} 1/);
    await newcomer.end();
    await live.end();
    await back.end();
    await app.end();
  }, 40_000);
});
