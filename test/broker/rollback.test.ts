/**
 * Rollback of broker state (docs/protocol.md §6.4, docs/operations.md
 * "Backups"): the documented online backup of registry.db is taken while the
 * device holds its ticket, the device makes one phase-2 connection (recorded
 * on the wire by a proxy), the backup is restored and the broker restarted,
 * and the recorded connection is replayed byte for byte. The restored
 * registry no longer knows the counter was used, so only the broker nonce in
 * the phase-2 keys can stop this: the replay gets a session under fresh keys,
 * its recorded reading does not open (nothing routed twice), and what the
 * broker seals to it is not the original ciphertext (no key/nonce reuse).
 * The genuine device and the app then carry on, nothing lost.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { copyFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { IPublishPacket, Packet } from 'mqtt-packet';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import type { RunningBroker } from '../../broker/server.js';
import { KX_TOPIC } from '../../firmware/secure/constants.js';
import { ReplayConnection, TcpProxy } from '../helpers/tcp-proxy.js';
import { TestApp, TestDevice, tempDir, testBroker, waitFor } from './helpers.js';

const publishes = (ps: Packet[], topic: string) => ps.filter((p): p is IPublishPacket => p.cmd === 'publish' && p.topic === topic).map((p) => Buffer.from(p.payload as Buffer));

describe('registry restore and replay of a recorded phase-2 connection', () => {
  const dir = tempDir('mqsec-rollback-');
  let broker: RunningBroker | undefined;
  const cleanups: (() => unknown)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
    await broker?.stop();
    dir.remove();
  });

  it('the replay after a restore gets fresh keys: nothing routed twice, no envelope under a reused key/nonce; device and app carry on', async () => {
    broker = await testBroker(dir.path);
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    const { key } = await broker.registry.addDevice('rb1', 'sensor');
    await broker.syncRegistry();
    const storage = new MemoryStorage();
    const first = new TestDevice(broker, 'rb1', key, storage);
    expect(await first.connect()).toMatchObject({ ok: true, phase: 1 });
    await first.end();

    // the documented online backup, taken while the device holds its ticket
    const backup = join(dir.path, 'backup.db');
    execFileSync('sqlite3', [join(dir.path, 'registry.db'), `.backup '${backup}'`]);

    // one phase-2 connection, recorded on the wire
    const app = await TestApp.connect(broker, 'backend', 'backend-password', 'backend/1');
    await app.subscribe('sensors/#');
    const proxy = await TcpProxy.start(broker.port);
    cleanups.push(() => proxy.stop());
    const dev = new TestDevice({ host: '127.0.0.1', port: proxy.port }, 'rb1', key, storage);
    expect(await dev.connect()).toMatchObject({ ok: true, phase: 2 });
    expect(await dev.subscribe('cmd/rb1/#')).toBe(1);
    await dev.publish('sensors/rb1/t', 'reading-1', 1);
    await waitFor(() => app.received.some((m) => m.payload === 'reading-1'), 5000, 'reading-1 routed');
    await app.client.publishAsync('cmd/rb1/x', 'command-1', { qos: 1 });
    await waitFor(() => dev.received.some((m) => m.payload === 'command-1'), 5000, 'command-1 delivered');
    await dev.end();
    await app.end();
    const rec = proxy.connections[0]!;
    const [originalConfirm] = publishes(rec.downPackets, KX_TOPIC);
    const [originalCommand] = publishes(rec.downPackets, 'cmd/rb1/x');
    expect(originalConfirm).toBeDefined();
    expect(originalCommand).toBeDefined();

    // restore the backup and restart the broker on it
    await broker.stop();
    broker = undefined;
    for (const f of ['registry.db-wal', 'registry.db-shm']) rmSync(join(dir.path, f), { force: true });
    copyFileSync(backup, join(dir.path, 'registry.db'));
    broker = await testBroker(dir.path);
    const app2 = await TestApp.connect(broker, 'backend', 'backend-password', 'backend/2');
    cleanups.push(() => app2.end());
    await app2.subscribe('sensors/#');

    // replay the recorded client bytes (CONNECT, SUBSCRIBE, the sealed reading, ...) but keep the connection open
    const up = Buffer.concat(rec.up);
    const recorded = up.subarray(up.length - 2).equals(Buffer.from([0xe0, 0x00])) ? up.subarray(0, up.length - 2) : up;
    const replay = await ReplayConnection.open(broker.port);
    cleanups.push(() => replay.close());
    replay.write([recorded]);
    await waitFor(() => replay.packets.some((p) => p.cmd === 'suback') || replay.closed, 5000, 'replay answered');
    // the restored registry cannot know counter c was used: CONNACK 0, but under a fresh broker nonce
    expect(replay.packets[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    const [replayConfirm] = publishes(replay.packets, KX_TOPIC);
    expect(replayConfirm).toBeDefined();
    expect(replayConfirm!.equals(originalConfirm!)).toBe(false);
    // the recorded reading does not open under the new keys: dropped, never routed a second time
    await new Promise((r) => setTimeout(r, 300));
    expect(app2.received.filter((m) => m.payload === 'reading-1')).toEqual([]);
    expect(await broker.metrics.value('mqsec_drops_total', { reason: 'decrypt_failed' })).toBeGreaterThanOrEqual(1);
    // the same command to the replayed session: sealed under new keys, so not the original ciphertext
    await app2.client.publishAsync('cmd/rb1/x', 'command-1', { qos: 1 });
    await waitFor(() => publishes(replay.packets, 'cmd/rb1/x').length > 0, 5000, 'command sealed to the replay');
    const [replayCommand] = publishes(replay.packets, 'cmd/rb1/x');
    expect(replayCommand!.length).toBe(originalCommand!.length);
    expect(replayCommand!.equals(originalCommand!)).toBe(false);

    // the genuine device comes back (next counter) and both directions work; nothing lost, nothing doubled
    const back = new TestDevice(broker, 'rb1', key, storage);
    cleanups.push(() => back.end());
    expect(await back.connect()).toMatchObject({ ok: true, phase: 2 });
    expect(await back.subscribe('cmd/rb1/#')).toBe(1);
    await back.publish('sensors/rb1/t', 'reading-2', 1);
    await waitFor(() => app2.received.some((m) => m.payload === 'reading-2'), 5000, 'reading-2 routed');
    await app2.client.publishAsync('cmd/rb1/x', 'command-2', { qos: 1 });
    await waitFor(() => back.received.some((m) => m.payload === 'command-2'), 5000, 'command-2 delivered');
    expect(app2.received.map((m) => m.payload)).toEqual(['reading-2']);
  });
});
