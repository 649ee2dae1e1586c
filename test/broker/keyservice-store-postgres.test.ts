/**
 * The key service store suite (test/broker/keyservice-store.ts) on
 * PostgreSQL, the state key service replicas share (§14.13): one real server
 * for the file, a fresh database per test; `second` is another replica (its
 * own data directory holding a copy of keyservice.key, its own pool).
 * Also: the journal of what was handed out, and the checks at open.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PgKeyServiceStore } from '../../broker/keyservice/pg-store.js';
import { KEY_SERVICE_KEY_FILE, KeyStoreUnavailableError } from '../../broker/keyservice/store.js';
import { startPostgres, type RunningPostgres } from '../helpers/postgres.js';
import { keyServiceStoreSuite, overlapping } from './keyservice-store.js';
import { tempDir } from './helpers.js';
import { freePort } from '../helpers/brokers.js';

let server: RunningPostgres;
const dirs: ReturnType<typeof tempDir>[] = [];
beforeAll(async () => {
  server = await startPostgres();
}, 60_000);
afterAll(async () => {
  await server?.stop();
  dirs.forEach((d) => d.remove());
});

const urls = new WeakMap<object, string>();
function replicaDir(from?: string): string {
  const d = tempDir('mqsec-ks-pg-');
  dirs.push(d);
  if (from) copyFileSync(join(from, KEY_SERVICE_KEY_FILE), join(d.path, KEY_SERVICE_KEY_FILE));
  return d.path;
}
const dirOf = new WeakMap<object, string>();
async function openAt(url: string, dataDir: string, holder?: string): Promise<PgKeyServiceStore> {
  const s = await PgKeyServiceStore.open({ url, dataDir, holder });
  urls.set(s, url);
  dirOf.set(s, dataDir);
  return s;
}

keyServiceStoreSuite('postgres', () => ({
  open: async () => openAt(await server.createDatabase(), replicaDir()),
  reopen: async (s) => (await s.close(), openAt(urls.get(s)!, replicaDir(dirOf.get(s)))),
  second: async (s) => openAt(urls.get(s)!, replicaDir(dirOf.get(s))),
}));

describe('key service store on PostgreSQL', () => {
  it('two replicas racing: the journal shows every epoch once and no range twice, each under the replica that drew it', async () => {
    const url = await server.createDatabase();
    const a = await openAt(url, replicaDir(), 'replica-a');
    const b = await openAt(url, replicaDir(dirOf.get(a)), 'replica-b');
    try {
      await Promise.all(
        Array.from({ length: 80 }, (_, i) => (i % 2 ? a : b).allocateSeq(`w${i % 3}`, 4096 * (1 + (i % 4)))).concat(
          Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).nextEpoch(`g${i % 2}/#`)) as Promise<number>[],
        ),
      );
      const seqs = await a.journal('seq');
      expect(seqs.length).toBe(80);
      expect(new Set(seqs.map((r) => r.holder))).toEqual(new Set(['replica-a', 'replica-b']));
      for (const w of ['w0', 'w1', 'w2']) {
        expect(overlapping(seqs.filter((r) => r.subject === w).map((r) => [r.first, r.last - r.first + 1] as [number, number]))).toEqual([]);
      }
      const epochs = await b.journal('epoch');
      for (const g of ['g0/#', 'g1/#']) expect(epochs.filter((r) => r.subject === g).map((r) => r.first).sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('refuses a replica whose keyservice.key is not the one the database was made with; an unreachable server is a typed error', async () => {
    const url = await server.createDatabase();
    const a = await openAt(url, replicaDir());
    await a.close();
    const other = replicaDir();
    writeFileSync(join(other, KEY_SERVICE_KEY_FILE), Buffer.alloc(32, 5), { mode: 0o600 });
    await expect(PgKeyServiceStore.open({ url, dataDir: other })).rejects.toThrow(/is not the one this database was made with/);
    const port = await freePort();
    await expect(PgKeyServiceStore.open({ url: `postgres://mqsec@127.0.0.1:${port}/x`, dataDir: replicaDir(), connectTimeoutMs: 1000 })).rejects.toBeInstanceOf(KeyStoreUnavailableError);
  });
});
