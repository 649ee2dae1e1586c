/**
 * Rollback of the shared registry in PostgreSQL (docs/protocol.md §6.4,
 * docs/operations.md "Scaling" › restore generation): why the cluster keeps
 * no restore generation. Two broker nodes share one PostgreSQL registry. A
 * `pg_dump` is taken while the device holds its ticket; the device makes one
 * phase-2 connection on node A (recorded on the wire by a proxy); then the
 * dump is restored in one transaction (`psql --single-transaction`) under the
 * running nodes, as a failover to a lagging replica or a restore does, and
 * the recorded connection is replayed byte for byte to node B, which never
 * saw the device (no memory of the counter: only the database could know).
 *
 * The restored database has forgotten that counter c was used, and nothing
 * in it could tell (a generation number in it is restored with it). The
 * replay gets CONNACK 0, but under a fresh broker nonce N_s: the recorded
 * reading does not open (nothing routed twice), what node B seals to it is
 * not the recorded ciphertext (no key/nonce reuse), and the genuine device
 * carries on with its next counter. Without N_s in the phase-2 keys the
 * recorded reading would open and be routed again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IPublishPacket, Packet } from 'mqtt-packet';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import type { RunningBroker } from '../../broker/server.js';
import { MASTER_KEY_FILE } from '../../broker/registry/secrets.js';
import { KX_TOPIC } from '../../firmware/secure/constants.js';
import { ReplayConnection, TcpProxy } from '../helpers/tcp-proxy.js';
import { hasPostgres, POSTGRES_BIN_DIR, startPostgres, type RunningPostgres } from '../helpers/postgres.js';
import { TestApp, TestDevice, tempDir, testBroker, waitFor } from './helpers.js';

const publishes = (ps: Packet[], topic: string) => ps.filter((p): p is IPublishPacket => p.cmd === 'publish' && p.topic === topic).map((p) => Buffer.from(p.payload as Buffer));

const run = hasPostgres() ? describe : describe.skip;

run('PostgreSQL registry restored under running nodes, then a recorded phase-2 connection replayed to another node', () => {
  const dirA = tempDir('mqsec-pgrb-a-');
  const dirB = tempDir('mqsec-pgrb-b-');
  let pg: RunningPostgres;
  let url: string;
  let a: RunningBroker;
  let b: RunningBroker;
  const cleanups: (() => unknown)[] = [];

  beforeAll(async () => {
    pg = await startPostgres();
    url = await pg.createDatabase();
    a = await testBroker(dirA.path, { db: url });
    copyFileSync(join(dirA.path, MASTER_KEY_FILE), join(dirB.path, MASTER_KEY_FILE));
    b = await testBroker(dirB.path, { db: url });
  }, 60_000);

  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
    await a?.stop();
    await b?.stop();
    await pg?.stop();
    dirA.remove();
    dirB.remove();
  }, 30_000);

  it('the replay gets fresh keys: nothing routed twice, no envelope under a reused key/nonce; the device carries on', async () => {
    await a.registry.addAccount('backend', 'app', 'backend-password');
    const { key } = await a.registry.addDevice('pgrb1', 'sensor');
    await Promise.all([a.syncRegistry(), b.syncRegistry()]);
    const storage = new MemoryStorage();
    const first = new TestDevice(a, 'pgrb1', key, storage);
    expect(await first.connect()).toMatchObject({ ok: true, phase: 1 });
    await first.end();
    const counterAtDump = await a.registry.getCounter('pgrb1');

    // the backup, taken while the device holds its ticket (an SQL dump that drops and re-creates)
    const dump = execFileSync(join(POSTGRES_BIN_DIR, 'pg_dump'), ['--clean', '--if-exists', '--no-owner', url], { maxBuffer: 64 << 20 });

    // one phase-2 connection on node A, recorded on the wire
    const appA = await TestApp.connect(a, 'backend', 'backend-password', 'backend/a');
    cleanups.push(() => appA.end());
    await appA.subscribe('sensors/#');
    const proxy = await TcpProxy.start(a.port);
    cleanups.push(() => proxy.stop());
    const dev = new TestDevice({ host: '127.0.0.1', port: proxy.port }, 'pgrb1', key, storage);
    expect(await dev.connect()).toMatchObject({ ok: true, phase: 2 });
    expect(await dev.subscribe('cmd/pgrb1/#')).toBe(1);
    await dev.publish('sensors/pgrb1/t', 'reading-1', 1);
    await waitFor(() => appA.received.some((m) => m.payload === 'reading-1'), 5000, 'reading-1 routed');
    await appA.client.publishAsync('cmd/pgrb1/x', 'command-1', { qos: 1 });
    await waitFor(() => dev.received.some((m) => m.payload === 'command-1'), 5000, 'command-1 delivered');
    await dev.end();
    const usedCounter = await a.registry.getCounter('pgrb1');
    expect(usedCounter).toBeGreaterThan(counterAtDump);
    const rec = proxy.connections[0]!;
    const [originalConfirm] = publishes(rec.downPackets, KX_TOPIC);
    const [originalCommand] = publishes(rec.downPackets, 'cmd/pgrb1/x');
    expect(originalConfirm).toBeDefined();
    expect(originalCommand).toBeDefined();

    // the restore, under the running nodes, in one transaction: the counter is back where it was
    execFileSync(join(POSTGRES_BIN_DIR, 'psql'), ['--quiet', '--no-psqlrc', '--single-transaction', '-v', 'ON_ERROR_STOP=1', '-d', url], { input: dump, stdio: ['pipe', 'ignore', 'pipe'] });
    expect(await b.registry.getCounter('pgrb1')).toBe(counterAtDump);

    const appB = await TestApp.connect(b, 'backend', 'backend-password', 'backend/b');
    cleanups.push(() => appB.end());
    await appB.subscribe('sensors/#');

    // replay the recorded client bytes to node B (CONNECT, SUBSCRIBE, the sealed reading, ...), keeping the connection open
    const up = Buffer.concat(rec.up);
    const recorded = up.subarray(up.length - 2).equals(Buffer.from([0xe0, 0x00])) ? up.subarray(0, up.length - 2) : up;
    const replay = await ReplayConnection.open(b.port);
    cleanups.push(() => replay.close());
    replay.write([recorded]);
    // the confirmation is written when the session is ready, not ordered with the SUBACK: wait for both
    await waitFor(() => (replay.packets.some((p) => p.cmd === 'suback') && publishes(replay.packets, KX_TOPIC).length > 0) || replay.closed, 5000, 'replay answered');
    // the restored registry cannot know counter c was used: CONNACK 0, but under a fresh broker nonce
    expect(replay.packets[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    expect(await b.registry.getCounter('pgrb1')).toBe(usedCounter); // accepted again, as the restore allows
    const [replayConfirm] = publishes(replay.packets, KX_TOPIC);
    expect(replayConfirm).toBeDefined();
    expect(replayConfirm!.equals(originalConfirm!)).toBe(false);
    // the recorded reading does not open under the new keys: dropped, never routed a second time
    await waitFor(async () => (await b.metrics.value('mqsec_drops_total', { reason: 'decrypt_failed' })) >= 1, 5000, 'recorded reading dropped');
    await new Promise((r) => setTimeout(r, 300));
    expect(appB.received.filter((m) => m.payload === 'reading-1')).toEqual([]);
    // the same command to the replayed session: sealed under new keys, so not the recorded ciphertext
    await appB.client.publishAsync('cmd/pgrb1/x', 'command-1', { qos: 1 });
    await waitFor(() => publishes(replay.packets, 'cmd/pgrb1/x').length > 0, 5000, 'command sealed to the replay');
    const [replayCommand] = publishes(replay.packets, 'cmd/pgrb1/x');
    expect(replayCommand!.length).toBe(originalCommand!.length);
    expect(replayCommand!.equals(originalCommand!)).toBe(false);
    replay.close();

    // the genuine device comes back (its next counter is above anything recorded) on either node
    const back = new TestDevice(b, 'pgrb1', key, storage);
    cleanups.push(() => back.end());
    expect(await back.connect()).toMatchObject({ ok: true, phase: 2 });
    await back.publish('sensors/pgrb1/t', 'reading-2', 1);
    await waitFor(() => appB.received.some((m) => m.payload === 'reading-2'), 5000, 'reading-2 routed');
    expect(appB.received.map((m) => m.payload)).toEqual(['reading-2']);
    expect(appA.received.filter((m) => m.payload === 'reading-1')).toHaveLength(1);
  }, 60_000);
});
