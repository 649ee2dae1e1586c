/**
 * The cluster as deployed on several hosts: broker nodes with their own data
 * directories (the same master key), the registry in a real PostgreSQL
 * (`db`), routing and Aedes' state in a real redis-server (`cluster`). Phase 1
 * on node A and phase 2 on node B, the §8.5 grace state handed over through
 * Redis, and PostgreSQL or Redis stopped for a while: new logins get CONNACK
 * 3, a live session stays, and everything recovers by itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { MASTER_KEY_FILE } from '../../broker/registry/secrets.js';
import type { RunningBroker } from '../../broker/server.js';
import { hasPostgres, startPostgres, type RunningPostgres } from '../helpers/postgres.js';
import { hasRedis, startRedis, type RunningRedis } from '../helpers/redis.js';
import { tempDir, testBroker, TestApp, TestDevice, waitFor } from './helpers.js';
import { openRegistry } from '../../broker/registry/open.js';
import type { Registry } from '../../broker/registry/store.js';
import { MemoryKeyServiceStore } from '../../broker/keyservice/store.js';

const run = hasRedis() && hasPostgres() ? describe : describe.skip;

async function persistentBackend(node: { host: string; port: number }, id: string): Promise<TestApp> {
  const client = mqtt.connect({ host: node.host, port: node.port, clientId: `backend/${id}`, username: 'backend', password: 'backend-password', clean: false, reconnectPeriod: 0, protocolVersion: 4 });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  const app = new TestApp(client);
  await client.subscribeAsync('sensors/#', { qos: 1 });
  return app;
}

run('broker nodes on PostgreSQL (registry) and Redis (routing, sessions, grace state)', () => {
  let redis: RunningRedis;
  let pg: RunningPostgres;
  const dirs: { path: string; remove(): void }[] = [];
  let a: RunningBroker;
  let b: RunningBroker;
  /** Provisioning: cluster nodes run with an external key service (§14.12); none runs here (hop-by-hop only), K_ks is kept in memory. */
  let admin: Registry;

  beforeAll(async () => {
    [redis, pg] = await Promise.all([startRedis(), startPostgres()]);
    const db = await pg.createDatabase();
    dirs.push(tempDir('mqsec-cnode-a-'), tempDir('mqsec-cnode-b-'));
    a = await testBroker(dirs[0]!.path, { db, keyService: 'external', cluster: { url: redis.url, nodeId: 'pg-a' } });
    copyFileSync(join(dirs[0]!.path, MASTER_KEY_FILE), join(dirs[1]!.path, MASTER_KEY_FILE));
    b = await testBroker(dirs[1]!.path, { db, keyService: 'external', cluster: { url: redis.url, nodeId: 'pg-b' } });
    await a.registry.addAccount('backend', 'app', 'backend-password');
    admin = await openRegistry({ dataDir: dirs[0]!.path, db, memberKeys: new MemoryKeyServiceStore() });
  }, 90_000);

  afterAll(async () => {
    await admin?.close();
    await a?.stop();
    await b?.stop();
    await Promise.all([redis?.stop(), pg?.stop()]);
    dirs.forEach((d) => d.remove());
  }, 60_000);

  it('phase 1 on A, phase 2 on B; a reading resent unchanged on B after the move is routed once, its copy refused', async () => {
    const { key } = await admin.addDevice('p1', 'sensor');
    const app = await persistentBackend(a, 'p1');
    const storage = new MemoryStorage();
    const onA = new TestDevice(a, 'p1', key, storage);
    expect(await onA.connect()).toMatchObject({ ok: true, phase: 1 });
    const delivered = await onA.publish('sensors/p1/t', 'before');
    await waitFor(() => app.received.length === 1);
    const inflight = Buffer.from(onA.session.seal('sensors/p1/t', new TextEncoder().encode('in-flight')));
    await a.context.cluster!.grace.settle();
    onA.client.stream.destroy();
    await waitFor(() => onA.closed);
    const onB = new TestDevice(b, 'p1', key, storage);
    expect(await onB.connect()).toMatchObject({ ok: true, phase: 2 });
    for (const env of [delivered, inflight, delivered]) await onB.client.publishAsync('sensors/p1/t', env, { qos: 1, dup: true } as never);
    await onB.publish('sensors/p1/t', 'fresh');
    await waitFor(() => app.received.some((m) => m.payload === 'fresh'));
    expect(app.received.map((m) => m.payload)).toEqual(['before', 'in-flight', 'fresh']);
    await onB.end();
    await app.end();
  }, 30_000);

  it('PostgreSQL away: CONNACK 3 for new logins on both nodes, a live session keeps publishing; logins again once it is back', async () => {
    const { key } = await admin.addDevice('p2', 'sensor');
    const { key: key3 } = await admin.addDevice('p3', 'sensor');
    const app = await persistentBackend(b, 'p2');
    const live = new TestDevice(a, 'p2', key);
    expect(await live.connect()).toMatchObject({ ok: true });
    // settled: its ticket written and the post-handshake checks done (they fail closed without the registry)
    await new Promise((r) => setTimeout(r, 1000));
    await pg.pause();
    try {
      expect(await new TestDevice(b, 'p3', key3).connect()).toMatchObject({ ok: false, code: 3 });
      await live.publish('sensors/p2/t', 'during');
      await waitFor(() => app.received.some((m) => m.payload === 'during'), 10_000, 'reading routed while PostgreSQL is away');
      expect(live.closed).toBe(false);
    } finally {
      await pg.resume();
    }
    const later = new TestDevice(b, 'p3', key3);
    for (let i = 0; i < 50; i++) {
      const r = await later.connect();
      if (r.ok) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(later.ready).toBe(true);
    await later.end();
    await live.end();
    await app.end();
  }, 60_000);
});
