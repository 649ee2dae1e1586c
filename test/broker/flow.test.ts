import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestApp, TestDevice, tempDir, testBroker, tryLogin, waitFor } from './helpers.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import type { RunningBroker } from '../../broker/server.js';

describe('broker end to end: devices (mqsec) and apps (plain MQTT.js)', () => {
  const dir = tempDir();
  let broker: RunningBroker;
  let key1: Uint8Array;
  let key2: Uint8Array;
  // a device keeps its storage (counter, ticket) across connections, like NVS
  const storages = new Map<string, MemoryStorage>();
  const device = (id: string, key: Uint8Array) => {
    if (!storages.has(id)) storages.set(id, new MemoryStorage());
    return new TestDevice(broker, id, key, storages.get(id));
  };

  beforeAll(async () => {
    broker = await testBroker(dir.path);
    key1 = (await broker.registry.addDevice('dev1', 'sensor')).key;
    key2 = (await broker.registry.addDevice('dev2', 'sensor')).key;
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    await broker.registry.addAccount('root', 'admin', 'root-password');
    await broker.registry.addRole('watcher'); // plaintext not allowed
    await broker.registry.addRule('watcher', 'subscribe', 'sensors/#');
    await broker.registry.addAccount('watch', 'watcher', 'watch-password');
    await broker.syncRegistry();
  });
  afterAll(async () => {
    await broker.stop();
    dir.remove();
  });

  it('device -> broker -> app: phase 1, sealed publish, plaintext delivery', async () => {
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    expect(await app.subscribe('sensors/#')).toBe(1);
    const d = device('dev1', key1);
    const r = await d.connect();
    expect(r).toMatchObject({ ok: true, phase: 1 });
    expect(d.phase).toBe(1);
    const envelope = await d.publish('sensors/dev1/temp', '21.5');
    expect(envelope.toString('utf8')).not.toContain('21.5');
    await waitFor(() => app.received.length === 1);
    expect(app.received[0]).toEqual({ topic: 'sensors/dev1/temp', payload: '21.5' });
    expect(await broker.metrics.value('mqsec_auth_total', { kind: 'phase1', result: 'ok' })).toBe(1);
    await d.end();
    await app.end();
  });

  it('app -> device commands are sealed for the device; other devices get nothing', async () => {
    const d1 = device('dev1', key1);
    expect((await d1.connect()).ok).toBe(true);
    const d2 = device('dev2', key2);
    expect((await d2.connect()).ok).toBe(true);
    expect(await d1.subscribe('cmd/dev1/#')).toBe(1);
    expect(await d2.subscribe('cmd/dev1/#')).toBe(128); // not its own tree
    expect(await d2.subscribe('cmd/#')).toBe(128);
    expect(await d2.subscribe('cmd/dev2/#')).toBe(1);
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.client.publishAsync('cmd/dev1/led', 'on', { qos: 1 });
    await waitFor(() => d1.received.length === 1);
    expect(d1.received[0]).toEqual({ topic: 'cmd/dev1/led', payload: 'on' });
    expect(d2.received).toEqual([]);
    expect(d1.dropped).toEqual([]);
    await Promise.all([d1.end(), d2.end(), app.end()]);
  });

  it('device -> device: re-sealed per subscriber session (admin-defined rule)', async () => {
    await broker.registry.addRole('peer');
    await broker.registry.addRule('peer', 'subscribe', 'sensors/+/temp');
    await broker.registry.addRule('peer', 'publish', 'sensors/%u/#');
    const k3 = (await broker.registry.addDevice('dev3', 'peer')).key;
    await broker.syncRegistry();
    const d3 = device('dev3', k3);
    await d3.connect();
    expect(await d3.subscribe('sensors/+/temp')).toBe(1);
    const d1 = device('dev1', key1);
    await d1.connect();
    await d1.publish('sensors/dev1/temp', '22');
    await d1.publish('sensors/dev1/hum', '40'); // not matched by dev3's filter
    await waitFor(() => d3.received.length === 1);
    expect(d3.received[0]).toEqual({ topic: 'sensors/dev1/temp', payload: '22' });
    await Promise.all([d1.end(), d3.end()]);
  });

  it('a plain client whose role may not see plaintext gets nothing (never ciphertext)', async () => {
    const w = await TestApp.connect(broker, 'watch', 'watch-password');
    expect(await w.subscribe('sensors/#')).toBe(1);
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const d = device('dev1', key1);
    await d.connect();
    await d.publish('sensors/dev1/temp', 'x');
    await waitFor(() => app.received.length === 1);
    expect(w.received).toEqual([]);
    await Promise.all([w.end(), app.end(), d.end()]);
  });

  it('reconnect uses phase 2 (resume token) and keeps working; text-form password works', async () => {
    const d = new TestDevice(broker, 'dev2', key2, storages.get('dev2'));
    await d.session.forgetTicket();
    expect((await d.connect({ textPassword: true })).phase).toBe(1);
    await d.end();
    const r = await d.connect();
    expect(r).toMatchObject({ ok: true, phase: 2 });
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/dev2/#');
    await d.publish('sensors/dev2/x', 'after-resume');
    await waitFor(() => app.received.length === 1);
    expect(app.received[0]!.payload).toBe('after-resume');
    await Promise.all([d.end(), app.end()]);
  });

  it('retained messages obey policy on delivery and are re-sealed', async () => {
    const root = await TestApp.connect(broker, 'root', 'root-password');
    await root.client.publishAsync('cmd/dev1/mode', 'eco', { qos: 1, retain: true });
    await root.client.publishAsync('cmd/dev2/mode', 'max', { qos: 1, retain: true });
    const d1 = device('dev1', key1);
    await d1.connect();
    await d1.subscribe('cmd/dev1/#');
    await waitFor(() => d1.received.length === 1);
    expect(d1.received).toEqual([{ topic: 'cmd/dev1/mode', payload: 'eco' }]);
    // the watcher role cannot read cmd/#, even retained
    await broker.registry.addRule('watcher', 'subscribe', 'cmd/dev2/#');
    await broker.syncRegistry();
    const w = await TestApp.connect(broker, 'watch', 'watch-password');
    expect(await w.subscribe('cmd/dev2/#')).toBe(1);
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.client.publishAsync('cmd/dev1/ping', 'p', { qos: 1 });
    await waitFor(() => d1.received.length === 2);
    expect(w.received).toEqual([]); // watcher role is not allowed plaintext
    await Promise.all([d1.end(), root.end(), w.end(), app.end()]);
  });

  it('plain accounts: wrong password, unknown user, device id as client id are refused', async () => {
    expect(await tryLogin(broker, { clientId: 'a1', username: 'backend', password: 'nope-nope' })).toBe(4);
    expect(await tryLogin(broker, { clientId: 'a2', username: 'ghost', password: 'whatever1' })).toBe(4);
    expect(await tryLogin(broker, { clientId: 'dev1', username: 'backend', password: 'backend-password' })).toBe(2);
    expect(await tryLogin(broker, { clientId: 'a3' })).toBe(4);
    expect((await broker.registry.listAudit({ kind: 'auth.fail' })).length).toBeGreaterThanOrEqual(4);
  });

  it('a device that asks for a persistent session keeps its queue: a command queued while away arrives after the confirmation, sealed under the new keys', async () => {
    const d = device('dev1', key1);
    await d.connect({ clean: false });
    await d.subscribe('cmd/dev1/#');
    await d.end();
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.client.publishAsync('cmd/dev1/offline', 'while-away', { qos: 1 });
    const again = device('dev1', key1);
    await again.connect({ clean: false });
    expect(again.sessionPresent).toBe(true);
    await app.client.publishAsync('cmd/dev1/online', 'now', { qos: 1 });
    await waitFor(() => again.received.some((m) => m.payload === 'now'));
    // (the retained cmd/dev1/mode from an earlier test may arrive too)
    expect(again.received.map((m) => m.payload).filter((p) => p !== 'eco')).toEqual(['while-away', 'now']);
    expect(again.dropped).toEqual([]);
    await Promise.all([again.end(), app.end()]);
    // back to a clean session for the tests that follow
    const clean = device('dev1', key1);
    await clean.connect({ clean: true });
    await clean.end();
  });

  it('a grant removed while subscribed stops delivery at once (policy re-checked at forward time)', async () => {
    await broker.registry.addRole('temp', { plaintext: true });
    await broker.registry.addRule('temp', 'subscribe', 'sensors/+/temp');
    await broker.registry.addAccount('tmp', 'temp', 'temp-password');
    await broker.syncRegistry();
    const t = await TestApp.connect(broker, 'tmp', 'temp-password');
    expect(await t.subscribe('sensors/+/temp')).toBe(1);
    const d = device('dev1', key1);
    await d.connect();
    await d.publish('sensors/dev1/temp', 'before');
    await waitFor(() => t.received.length === 1);
    expect(await broker.registry.removeRule('temp', 'subscribe', 'sensors/+/temp')).toBe(true);
    await broker.syncRegistry();
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    await d.publish('sensors/dev1/temp', 'after');
    await waitFor(() => app.received.some((m) => m.payload === 'after'));
    expect(t.received.map((m) => m.payload)).toEqual(['before']);
    expect(t.closed).toBe(false); // the subscription stays, it just receives nothing
    await Promise.all([t.end(), d.end(), app.end()]);
  });

  it('admin may use everything but $mqsec', async () => {
    const root = await TestApp.connect(broker, 'root', 'root-password');
    expect(await root.subscribe('#')).toBe(1);
    expect(await root.subscribe('$mqsec/#')).toBe(128);
    expect(await root.subscribe('$mqsec/kx')).toBe(128);
    await root.end();
  });
});
