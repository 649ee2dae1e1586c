/**
 * Revocation, rotation, restart and client-id takeover against a running
 * broker, with mqsec devices and unmodified MQTT.js apps.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import type { RunningBroker } from '../../broker/server.js';
import { TestApp, TestDevice, replayLogin, tempDir, testBroker, tryLogin, waitFor } from './helpers.js';
import { MSG_COUNTER_HINT } from '../../firmware/secure/constants.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeRxSnapshot } from '../../broker/grace-store.js';
import Database from 'better-sqlite3';

const STATE_KEY = 'mqsecstate';

async function cloneStorage(from: MemoryStorage): Promise<MemoryStorage> {
  const s = new MemoryStorage();
  const v = await from.get(STATE_KEY);
  if (v) await s.put(STATE_KEY, v);
  return s;
}

describe('revocation, rotation, restart', () => {
  let dir: ReturnType<typeof tempDir>;
  let broker: RunningBroker;
  beforeEach(async () => {
    dir = tempDir();
    broker = await testBroker(dir.path, { limits: { phase1TimeoutMs: 500 } });
    await broker.registry.addAccount('backend', 'app', 'backend-password');
  });
  afterEach(async () => {
    await broker.stop();
    dir.remove();
  });

  it('revoke from another registry handle (as the CLI does) during traffic: session closed, tickets dead, no re-login', async () => {
    const { key } = await broker.registry.addDevice('r1', 'sensor');
    const storage = new MemoryStorage();
    const dev = new TestDevice(broker, 'r1', key, storage);
    expect((await dev.connect()).ok).toBe(true);
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    let sent = 0;
    const traffic = (async () => {
      while (!dev.closed && sent < 100_000) {
        // QoS 0 so a publish after the close cannot wait forever for a PUBACK
        await dev.publish('sensors/r1/n', String(sent), 0).catch(() => undefined);
        sent++;
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    await waitFor(() => app.received.length >= 5, 5000, 'traffic flowing');
    const admin = SqliteRegistry.open(dir.path); // separate handle = separate process as far as SQLite is concerned
    const t0 = Date.now();
    await admin.revokeDevice('r1');
    await waitFor(() => dev.closed, 5000, 'revoked device disconnected');
    const ms = Date.now() - t0;
    await traffic;
    console.log(`revocation: live session closed ${ms} ms after the registry write`);
    expect(await admin.ticketCount('r1')).toBe(0);
    await admin.close();
    const got = app.received.length;
    // phase 2 refused (ticket gone) -> device falls back to phase 1 -> refused (revoked)
    expect((await dev.connect()).ok).toBe(false);
    expect((await dev.connect()).ok).toBe(false);
    expect(dev.connackCode).toBe(4); // as for an unknown id (§10)
    expect(app.received.length).toBe(got);
    expect(await broker.metrics.value('mqsec_revocation_disconnects_total')).toBe(1);
    expect(await broker.registry.listAudit({ kind: 'session.revoked', subject: 'r1' })).toHaveLength(1);
    await app.end();
  });

  it('revocation bound: a revoked device\'s live session is closed within 1 s of the registry write (4 trials at random poll phases)', async () => {
    // The broker polls the registry every 250 ms; 1 s leaves room for a loaded machine, and
    // four trials at random phases make a slower poll (e.g. 4 s) fail almost surely.
    const BOUND_MS = 1000;
    const admin = SqliteRegistry.open(dir.path);
    const measured: number[] = [];
    for (let i = 0; i < 4; i++) {
      const { key } = await broker.registry.addDevice(`rb${i}`, 'sensor');
      const dev = new TestDevice(broker, `rb${i}`, key);
      expect((await dev.connect()).ok).toBe(true);
      await new Promise((r) => setTimeout(r, Math.random() * 300));
      const t0 = Date.now();
      await admin.revokeDevice(`rb${i}`);
      await waitFor(() => dev.closed, 10_000, 'revoked device disconnected');
      measured.push(Date.now() - t0);
    }
    await admin.close();
    console.log(`revocation bound: live sessions closed ${measured.join(', ')} ms after the registry write (bound ${BOUND_MS} ms)`);
    for (const ms of measured) expect(ms).toBeLessThan(BOUND_MS);
  });

  it('remove and add again within one poll interval: the next poll closes the old live session (key identity, not just version)', async () => {
    await broker.stop();
    broker = await testBroker(dir.path, { revisionPollMs: 3_600_000 }); // polls only when the test says so
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const { key } = await broker.registry.addDevice('ra1', 'sensor');
    await broker.syncRegistry();
    const old = new TestDevice(broker, 'ra1', key);
    expect(await old.connect()).toMatchObject({ ok: true, phase: 1 });
    await old.publish('sensors/ra1/t', 'before');
    await waitFor(() => app.received.some((m) => m.payload === 'before'));
    const admin = SqliteRegistry.open(dir.path);
    await admin.removeDevice('ra1');
    await new Promise((r) => setTimeout(r, 2)); // a later creation time, as a separate CLI run has
    const { key: newKey } = await admin.addDevice('ra1', 'sensor'); // key version 1 again
    await admin.close();
    expect(old.closed).toBe(false); // no poll yet
    await broker.syncRegistry(); // the one poll that sees both changes
    await waitFor(() => old.closed, 5000, 'old session of the removed device closed');
    expect((await broker.registry.listAudit({ kind: 'session.revoked', subject: 'ra1' })).map((r) => r.detail)).toEqual(['removed and added again']);
    const fresh = new TestDevice(broker, 'ra1', newKey); // the re-added device, new key
    expect(await fresh.connect()).toMatchObject({ ok: true, phase: 1 });
    await fresh.publish('sensors/ra1/t', 'after');
    await waitFor(() => app.received.some((m) => m.payload === 'after'));
    await fresh.end();
    await app.end();
  });

  it('rotate: old key and tickets stop working, the new key works', async () => {
    const { key: oldKey } = await broker.registry.addDevice('k1', 'sensor');
    const oldStorage = new MemoryStorage();
    const dev = new TestDevice(broker, 'k1', oldKey, oldStorage);
    expect((await dev.connect()).ok).toBe(true);
    const { key: newKey } = await SqliteRegistry.open(dir.path).rotateDevice('k1'); // handle leaks to process end: fine for a test
    await waitFor(() => dev.closed, 5000, 'rotated device disconnected');
    const again = new TestDevice(broker, 'k1', oldKey, oldStorage);
    expect(await again.connect()).toMatchObject({ ok: false, phase: 2 });
    expect(await again.connect()).toMatchObject({ ok: false, phase: 1 });
    const fresh = new TestDevice(broker, 'k1', newKey); // re-provisioned: new key, new storage
    expect(await fresh.connect()).toMatchObject({ ok: true, phase: 1 });
    await fresh.end();
  });

  it('broker restart: devices come back through phase 2 only, QoS 1 data flows', async () => {
    const keys = [];
    for (const id of ['s1', 's2', 's3']) keys.push({ id, key: (await broker.registry.addDevice(id, 'sensor')).key, storage: new MemoryStorage() });
    for (const k of keys) {
      const d = new TestDevice(broker, k.id, k.key, k.storage);
      expect((await d.connect()).phase).toBe(1);
      await d.end();
    }
    await broker.stop();
    broker = await testBroker(dir.path);
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    for (const k of keys) {
      const d = new TestDevice(broker, k.id, k.key, k.storage);
      expect(await d.connect()).toMatchObject({ ok: true, phase: 2 });
      await d.publish(`sensors/${k.id}/boot`, 'back', 1);
      await d.end();
    }
    await waitFor(() => app.received.length === 3);
    expect(await broker.metrics.value('mqsec_auth_total', { kind: 'phase2', result: 'ok' })).toBe(3);
    expect(await broker.metrics.value('mqsec_auth_total', { kind: 'phase1', result: 'ok' })).toBe(0);
    await app.end();
  });
});

describe('QoS 1 across a key change', () => {
  it('an envelope sealed before a phase-2 reconnect is accepted once (previous-epoch grace), then is a replay', async () => {
    const dir = tempDir();
    const broker = await testBroker(dir.path);
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    const { key } = await broker.registry.addDevice('q1', 'sensor');
    const storage = new MemoryStorage();
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const d = new TestDevice(broker, 'q1', key, storage);
    await d.connect();
    // sealed under the first session, "in flight" when the connection drops
    const inflight = Buffer.from(d.session.seal('sensors/q1/t', new TextEncoder().encode('in-flight')));
    await d.end();
    expect(await d.connect()).toMatchObject({ ok: true, phase: 2 });
    await d.client.publishAsync('sensors/q1/t', inflight, { qos: 1, dup: true } as never); // the QoS 1 resend
    await d.client.publishAsync('sensors/q1/t', inflight, { qos: 1, dup: true } as never); // and once more
    await d.publish('sensors/q1/t', 'fresh');
    await waitFor(() => app.received.some((m) => m.payload === 'fresh'));
    expect(app.received.map((m) => m.payload)).toEqual(['in-flight', 'fresh']);
    await d.end();
    await app.end();
    await broker.stop();
    dir.remove();
  });
});

describe('QoS 1 across a graceful broker restart (grace state kept)', () => {
  it('an envelope resent after the restart is routed once; a copy that had arrived before is dropped as a replay', async () => {
    const dir = tempDir();
    let broker = await testBroker(dir.path);
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    const { key } = await broker.registry.addDevice('q3', 'sensor');
    const storage = new MemoryStorage();
    let app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const d = new TestDevice(broker, 'q3', key, storage);
    await d.connect();
    const delivered = await d.publish('sensors/q3/t', 'before'); // arrives; pretend its PUBACK was lost
    await waitFor(() => app.received.length === 1);
    const inflight = Buffer.from(d.session.seal('sensors/q3/t', new TextEncoder().encode('in-flight'))); // never arrived
    await d.end();
    await app.end();
    await broker.stop();
    broker = await testBroker(dir.path);
    expect(await broker.registry.takeGrace(0)).toEqual([]); // read once at start, then deleted
    app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const again = new TestDevice(broker, 'q3', key, storage); // same device (storage), new broker port
    expect(await again.connect()).toMatchObject({ ok: true, phase: 2 });
    // the device resends both unchanged, twice, as a QoS 1 client does after reconnecting
    for (const env of [delivered, inflight, delivered, inflight]) await again.client.publishAsync('sensors/q3/t', env, { qos: 1, dup: true } as never);
    await again.publish('sensors/q3/t', 'fresh');
    await waitFor(() => app.received.some((m) => m.payload === 'fresh'));
    expect(app.received.map((m) => m.payload)).toEqual(['in-flight', 'fresh']);
    expect(await broker.metrics.value('mqsec_drops_total', { reason: 'replay' })).toBe(3);
    await again.end();
    await app.end();
    await broker.stop();
    dir.remove();
  });

  it('the grace state at rest is sealed: no key bytes in the database, and a tampered record is skipped', async () => {
    const dir = tempDir();
    let broker = await testBroker(dir.path);
    const { key } = await broker.registry.addDevice('q4', 'sensor');
    const storage = new MemoryStorage();
    const d = new TestDevice(broker, 'q4', key, storage);
    await d.connect();
    await d.end();
    await broker.stop();
    const reg = SqliteRegistry.open(dir.path);
    const rows = await reg.takeGrace(0);
    expect(rows).toHaveLength(1);
    const snapshot = decodeRxSnapshot(reg.openSecret('grace:q4', rows[0]!.sealed));
    const db = readFileSync(join(dir.path, 'registry.db'));
    expect(db.includes(Buffer.from(snapshot.key))).toBe(false);
    // put it back with one byte flipped: the broker must skip it, not crash
    const bad = rows[0]!.sealed.slice();
    bad[bad.length - 1]! ^= 1;
    await reg.saveGrace([{ devId: 'q4', until: rows[0]!.until, sealed: bad }]);
    await reg.close();
    broker = await testBroker(dir.path);
    const again = new TestDevice(broker, 'q4', key, storage);
    expect(await again.connect()).toMatchObject({ ok: true, phase: 2 });
    await again.end();
    await broker.stop();
    dir.remove();
  });
});

describe('QoS 1 across a broker crash (grace state lost)', () => {
  it('an envelope of an epoch the broker has no keys for closes the connection without PUBACK; QoS 0 is just dropped', async () => {
    const dir = tempDir();
    let broker = await testBroker(dir.path);
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    const { key } = await broker.registry.addDevice('q2', 'sensor');
    const storage = new MemoryStorage();
    const d = new TestDevice(broker, 'q2', key, storage);
    await d.connect();
    const inflight = Buffer.from(d.session.seal('sensors/q2/t', new TextEncoder().encode('in-flight')));
    const inflight0 = Buffer.from(d.session.seal('sensors/q2/t', new TextEncoder().encode('in-flight-qos0')));
    await d.end();
    await broker.stop();
    // a crash writes no grace state: remove what the graceful stop wrote
    const reg = SqliteRegistry.open(dir.path);
    await reg.takeGrace(0);
    await reg.close();
    broker = await testBroker(dir.path);
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const d2 = new TestDevice(broker, 'q2', key, storage); // same device (storage), new broker port
    expect(await d2.connect()).toMatchObject({ ok: true, phase: 2 });
    d2.client.publish('sensors/q2/t', inflight0, { qos: 0 });
    let acked = false;
    d2.client.publish('sensors/q2/t', inflight, { qos: 1 }, () => (acked = true));
    await waitFor(() => d2.closed, 5000, 'connection closed for re-seal');
    expect(acked).toBe(false);
    // the device reconnects and re-seals the message under its new keys
    expect(await d2.connect()).toMatchObject({ ok: true, phase: 2 });
    await d2.publish('sensors/q2/t', 'in-flight', 1);
    await waitFor(() => app.received.length === 1);
    expect(app.received.map((m) => m.payload)).toEqual(['in-flight']);
    expect(await broker.metrics.value('mqsec_drops_total', { reason: 'stale-epoch' })).toBe(1);
    await d2.end();
    await app.end();
    await broker.stop();
    dir.remove();
  });
});

describe('wills', () => {
  it('an account will is published when allowed; a device will never is (it cannot be sealed)', async () => {
    const dir = tempDir();
    const broker = await testBroker(dir.path);
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    await broker.registry.addAccount('root', 'admin', 'root-password');
    const root = await TestApp.connect(broker, 'root', 'root-password');
    await root.subscribe('#');
    const { default: mqtt } = await import('mqtt');
    const withWill = (username: string, password: string, clientId: string, topic: string) =>
      mqtt.connectAsync({ host: broker.host, port: broker.port, username, password, clientId, reconnectPeriod: 0, will: { topic, payload: Buffer.from(`will-${clientId}`), qos: 1, retain: false } });
    const a = await withWill('backend', 'backend-password', 'backend/w-app', 'cmd/x/gone');
    const b = await withWill('backend', 'backend-password', 'backend/w-app2', 'sensors/x/gone'); // app may not publish there
    a.stream.destroy();
    b.stream.destroy();
    await waitFor(() => root.received.some((m) => m.payload === 'will-backend/w-app'));
    expect(root.received.some((m) => m.payload === 'will-backend/w-app2')).toBe(false);
    await root.end();
    await broker.stop();
    dir.remove();
  });
});

describe('client-id takeover', () => {
  let dir: ReturnType<typeof tempDir>;
  let broker: RunningBroker;
  let key: Uint8Array;
  let storage: MemoryStorage;
  let genuine: TestDevice;
  let app: TestApp;

  beforeEach(async () => {
    dir = tempDir();
    broker = await testBroker(dir.path, { limits: { phase1TimeoutMs: 400 } });
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    key = (await broker.registry.addDevice('g1', 'sensor')).key;
    storage = new MemoryStorage();
    genuine = new TestDevice(broker, 'g1', key, storage);
    expect((await genuine.connect()).ok).toBe(true);
    await genuine.subscribe('cmd/g1/#');
    app = await TestApp.connect(broker, 'backend', 'backend-password');
  });
  afterEach(async () => {
    await genuine.end();
    await app.end();
    await broker.stop();
    dir.remove();
  });

  async function genuineStillServed(tag: string): Promise<void> {
    expect(genuine.closed).toBe(false);
    await app.client.publishAsync('cmd/g1/check', tag, { qos: 1 });
    await waitFor(() => genuine.received.some((m) => m.payload === tag), 5000, `genuine receives ${tag}`);
  }

  it('forged KX1 (wrong key), replayed KX1, plain password, account login with the id: all refused, genuine untouched', async () => {
    const forger = new TestDevice(broker, 'g1', new Uint8Array(32).fill(7));
    expect(await forger.connect()).toMatchObject({ ok: false, code: 4 });
    // the genuine device's own first CONNECT password, replayed
    // §5.5: a MAC-valid KX1 with a used counter gets only a counter hint (bound to that KX1) and a close
    const replay = await replayLogin(broker, { clientId: 'g1', password: genuine.lastPassword! });
    expect(replay.connack).toBe(0);
    expect(replay.kx.map((k) => k[0])).toEqual([MSG_COUNTER_HINT]);
    expect(replay.closedByBroker).toBe(true);
    expect(await tryLogin(broker, { clientId: 'g1', username: 'g1', password: 'guess-password' })).toBe(4); // downgrade
    expect(await tryLogin(broker, { clientId: 'g1', username: 'backend', password: 'backend-password' })).toBe(2);
    await genuineStillServed('after-forgery');
  });

  it('a pending phase 1 (holder of the key that stalls before KX3) never disconnects the live device and times out', async () => {
    const clone = new TestDevice(broker, 'g1', key, await cloneStorage(storage));
    await clone.session.forgetTicket();
    clone.holdKx3 = true;
    expect(await clone.connect()).toMatchObject({ ok: true, phase: 1 });
    expect(clone.heldKx3).toBeDefined();
    await genuineStillServed('while-pending');
    await waitFor(() => clone.closed, 5000, 'pending clone timed out');
    await genuineStillServed('after-timeout');
    expect(broker.context.pendingCount.value).toBe(0);
  });

  it('a second login replaces the live session only once fully authenticated (KX3 verified)', async () => {
    const clone = new TestDevice(broker, 'g1', key, await cloneStorage(storage));
    await clone.session.forgetTicket();
    clone.holdKx3 = true;
    await clone.connect();
    await genuineStillServed('before-kx3');
    await clone.subscribe('cmd/g1/#').catch(() => 128); // waits for phase 1 in the broker
    await clone.sendHeldKx3();
    await waitFor(() => genuine.closed, 5000, 'old session replaced');
    expect(await clone.subscribe('cmd/g1/#')).toBe(1);
    await app.client.publishAsync('cmd/g1/x', 'to-new', { qos: 1 });
    await waitFor(() => clone.received.some((m) => m.payload === 'to-new'));
    await clone.end();
  });

  it('phase 2 reconnect of the device itself replaces its stale session at once', async () => {
    const second = new TestDevice(broker, 'g1', key, storage); // same storage: same device after a reboot
    expect(await second.connect()).toMatchObject({ ok: true, phase: 2 });
    await waitFor(() => genuine.closed, 5000, 'stale session closed');
    await second.subscribe('cmd/g1/#');
    await app.client.publishAsync('cmd/g1/y', 'to-second', { qos: 1 });
    await waitFor(() => second.received.some((m) => m.payload === 'to-second'));
    await second.end();
  });
});

describe('revoke and rotate drop the old receive keys (grace list) everywhere', () => {
  /** The attacker holds the compromised device's last session (flash dump): it seals under those keys. */
  function sealOld(d: TestDevice, topic: string, text: string): Buffer {
    return Buffer.from(d.session.seal(topic, new TextEncoder().encode(text)));
  }

  it('revoke + rotate on a running broker: an envelope sealed under the old keys is refused in the re-provisioned device\'s first session', async () => {
    const dir = tempDir();
    const broker = await testBroker(dir.path);
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const { key } = await broker.registry.addDevice('x1', 'sensor');
    const old = new TestDevice(broker, 'x1', key);
    expect(await old.connect()).toMatchObject({ ok: true, phase: 1 }); // counter 0: epoch 0
    const forged = sealOld(old, 'sensors/x1/t', 'sealed-by-the-thief');
    const admin = SqliteRegistry.open(dir.path);
    await admin.revokeDevice('x1');
    await waitFor(() => old.closed, 5000, 'revoked device disconnected');
    const { key: newKey } = await admin.rotateDevice('x1');
    await admin.close();
    await broker.syncRegistry();
    const fresh = new TestDevice(broker, 'x1', newKey); // re-provisioned: new key, counter starts over (epoch 0 again)
    expect(await fresh.connect()).toMatchObject({ ok: true, phase: 1 });
    await fresh.client.publishAsync('sensors/x1/t', forged, { qos: 1 }); // injected into the new connection
    await fresh.publish('sensors/x1/t', 'genuine');
    await waitFor(() => app.received.some((m) => m.payload === 'genuine'));
    expect(app.received.map((m) => m.payload)).toEqual(['genuine']);
    expect(await broker.metrics.value('mqsec_drops_total', { reason: 'decrypt_failed' })).toBe(1);
    await fresh.end();
    await app.end();
    await broker.stop();
    dir.remove();
  });

  for (const change of ['rotate', 'remove and add again'] as const) {
    it(`${change}, seen first by the next login (before any registry poll): the old grace keys are not inherited`, async () => {
      const dir = tempDir();
      const broker = await testBroker(dir.path, { revisionPollMs: 3_600_000 });
      await broker.registry.addAccount('backend', 'app', 'backend-password');
      await broker.syncRegistry();
      const app = await TestApp.connect(broker, 'backend', 'backend-password');
      await app.subscribe('sensors/#');
      const { key } = await broker.registry.addDevice('x2', 'sensor');
      const old = new TestDevice(broker, 'x2', key);
      expect(await old.connect()).toMatchObject({ ok: true, phase: 1 });
      const forged = sealOld(old, 'sensors/x2/t', 'sealed-by-the-thief');
      await old.end();
      const admin = SqliteRegistry.open(dir.path);
      let newKey: Uint8Array;
      if (change === 'rotate') newKey = (await admin.rotateDevice('x2')).key;
      else {
        await admin.removeDevice('x2');
        await new Promise((r) => setTimeout(r, 2)); // a later creation time, as a separate CLI run has
        newKey = (await admin.addDevice('x2', 'sensor')).key; // key version 1 again
      }
      await admin.close();
      const fresh = new TestDevice(broker, 'x2', newKey);
      expect(await fresh.connect()).toMatchObject({ ok: true, phase: 1 });
      await fresh.client.publishAsync('sensors/x2/t', forged, { qos: 1 });
      await fresh.publish('sensors/x2/t', 'genuine');
      await waitFor(() => app.received.some((m) => m.payload === 'genuine'));
      expect(app.received.map((m) => m.payload)).toEqual(['genuine']);
      await fresh.end();
      await app.end();
      await broker.stop();
      dir.remove();
    });
  }

  it('graceful stop writes no grace keys of a revoked device; a rotation while stopped deletes the stored ones; the genuine device keeps its grace', async () => {
    const dir = tempDir();
    let broker = await testBroker(dir.path);
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    const devs: Record<string, { key: Uint8Array; storage: MemoryStorage }> = {};
    for (const id of ['ra', 'rb', 'rc']) devs[id] = { key: (await broker.registry.addDevice(id, 'sensor')).key, storage: new MemoryStorage() };
    const sealed: Record<string, Buffer> = {};
    for (const id of ['ra', 'rb', 'rc']) {
      const d = new TestDevice(broker, id, devs[id]!.key, devs[id]!.storage);
      expect(await d.connect()).toMatchObject({ ok: true, phase: 1 });
      sealed[id] = sealOld(d, `sensors/${id}/t`, `in-flight-${id}`);
      await d.end();
    }
    const admin = SqliteRegistry.open(dir.path);
    await admin.revokeDevice('ra'); // while the broker runs: stop must not write ra's keys
    await admin.close();
    await broker.stop();
    const db = new Database(join(dir.path, 'registry.db'), { readonly: true });
    const stored = (db.prepare('SELECT device_id FROM grace ORDER BY device_id').all() as { device_id: string }[]).map((r) => r.device_id);
    db.close();
    expect(stored).toEqual(['rb', 'rc']);
    const offline = SqliteRegistry.open(dir.path);
    const { key: rbNew } = await offline.rotateDevice('rb'); // while the broker is stopped
    await offline.close();
    broker = await testBroker(dir.path);
    const app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
    const rb = new TestDevice(broker, 'rb', rbNew);
    expect(await rb.connect()).toMatchObject({ ok: true, phase: 1 });
    await rb.client.publishAsync('sensors/rb/t', sealed.rb!, { qos: 1 }); // old keys: refused
    await rb.publish('sensors/rb/t', 'genuine-rb');
    const rc = new TestDevice(broker, 'rc', devs.rc!.key, devs.rc!.storage);
    expect(await rc.connect()).toMatchObject({ ok: true, phase: 2 });
    await rc.client.publishAsync('sensors/rc/t', sealed.rc!, { qos: 1, dup: true } as never); // genuine resend: routed once
    await waitFor(() => app.received.length === 2);
    await new Promise((r) => setTimeout(r, 100));
    expect(app.received.map((m) => m.payload).sort()).toEqual(['genuine-rb', 'in-flight-rc']);
    await rb.end();
    await rc.end();
    await app.end();
    await broker.stop();
    dir.remove();
  });
});

describe('wills of accounts closed by a registry change', () => {
  it('disabling or removing an account discards its will (retained too); an active account\'s will still goes out', async () => {
    const dir = tempDir();
    const broker = await testBroker(dir.path);
    for (const name of ['gone1', 'gone2', 'stays']) await broker.registry.addAccount(name, 'app', `${name}-password`);
    await broker.registry.addAccount('root', 'admin', 'root-password');
    const root = await TestApp.connect(broker, 'root', 'root-password', 'root');
    await root.subscribe('cmd/#');
    const { default: mqtt } = await import('mqtt');
    const withWill = (name: string) =>
      mqtt.connectAsync({
        host: broker.host,
        port: broker.port,
        username: name,
        password: `${name}-password`,
        clientId: name,
        reconnectPeriod: 0,
        will: { topic: `cmd/all/${name}`, payload: Buffer.from(`will-${name}`), qos: 1, retain: true },
      });
    const clients = { gone1: await withWill('gone1'), gone2: await withWill('gone2'), stays: await withWill('stays') };
    const closed = (c: { connected: boolean }) => () => !c.connected;
    const admin = SqliteRegistry.open(dir.path);
    await admin.setAccountStatus('gone1', 'disabled');
    await admin.removeAccount('gone2');
    await admin.close();
    await waitFor(closed(clients.gone1), 5000, 'disabled account disconnected');
    await waitFor(closed(clients.gone2), 5000, 'removed account disconnected');
    clients.stays.stream.destroy(); // an active account's connection lost: its will is published
    await waitFor(() => root.received.some((m) => m.payload === 'will-stays'));
    await new Promise((r) => setTimeout(r, 200));
    expect(root.received.map((m) => m.payload)).toEqual(['will-stays']);
    // nothing retained for the discarded wills: a new subscriber gets only the active account's
    const late = await TestApp.connect(broker, 'root', 'root-password', 'root/late');
    await late.subscribe('cmd/#');
    await waitFor(() => late.received.length >= 1);
    await new Promise((r) => setTimeout(r, 200));
    expect(late.received.map((m) => m.payload)).toEqual(['will-stays']);
    await late.end();
    await root.end();
    await broker.stop();
    dir.remove();
  });
});
