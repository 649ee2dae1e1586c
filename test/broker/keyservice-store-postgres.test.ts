/**
 * The key service store suite (test/broker/keyservice-store.ts) on
 * PostgreSQL, the state key service replicas share (§14.13): one real server
 * for the file, a fresh database per test; `second` is another replica (its
 * own data directory holding a copy of keyservice.key, its own pool).
 * Also: the journal of what was handed out, and the checks at open.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PgKeyServiceStore } from '../../broker/keyservice/pg-store.js';
import { KEY_SERVICE_DB_FILE, KEY_SERVICE_KEY_FILE, KeyStoreUnavailableError, SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { main } from '../../cli/main.js';
import type { CliIo } from '../../cli/command.js';
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

  it('the journal is kept for journalDays: prune deletes older rows (the active replica prunes every hour)', async () => {
    const url = await server.createDatabase();
    let now = 1_000_000_000_000;
    const s = await PgKeyServiceStore.open({ url, dataDir: replicaDir(), journalDays: 2, now: () => now });
    try {
      await s.allocateSeq('w', 10);
      now += 86_400_000;
      await s.nextEpoch('g/#');
      expect(await s.prune()).toBe(0);
      now += 1.5 * 86_400_000; // the range row is 2.5 days old, the epoch row 1.5
      expect(await s.prune()).toBe(1);
      expect((await s.journal()).map((r) => r.kind)).toEqual(['epoch']);
      expect(await s.allocateSeq('w', 1)).toBe(10); // the counters are not the journal
    } finally {
      await s.close();
    }
  });

  const cli = async (args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), readStdin: async () => '' };
    const code = await main(['node', 'mqsec', ...args], io);
    process.exitCode = 0;
    return { code, out: out.join('\n'), err: err.join('\n') };
  };

  it('mqsec keyservice migrate --db: a key service directory moves into PostgreSQL (epochs and ranges forward, K_ks with it), its SQLite store is deleted', async () => {
    const url = await server.createDatabase();
    const ksDir = replicaDir();
    const old = SqliteKeyServiceStore.open(ksDir);
    for (let i = 0; i < 4; i++) await old.nextEpoch('sensors/d1/#');
    await old.allocateSeq('d1', 8192);
    await old.putMemberKey('d1', '7/1', new Uint8Array(32).fill(4));
    await old.close();
    const r = await cli(['keyservice', 'migrate', '--from', ksDir, '--data', ksDir, '--db', url]);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/moved 1 group epochs and 1 member keys to postgres:/);
    expect(existsSync(join(ksDir, KEY_SERVICE_DB_FILE))).toBe(false); // started again without --db it would begin at epoch 1
    expect(existsSync(join(ksDir, KEY_SERVICE_KEY_FILE))).toBe(true);
    const s = await openAt(url, replicaDir(ksDir));
    try {
      expect(await s.nextEpoch('sensors/d1/#')).toBe(5);
      expect(await s.allocateSeq('d1', 1)).toBe(8192);
      expect(await s.memberKey('d1')).toEqual({ identity: '7/1', key: new Uint8Array(32).fill(4) });
    } finally {
      await s.close();
    }
  });

  it('mqsec keyservice migrate --db: an embedded key service moves out of a broker directory into PostgreSQL', async () => {
    const url = await server.createDatabase();
    const brokerDir = replicaDir();
    const ksDir = replicaDir();
    await SqliteRegistry.open(brokerDir).close();
    const embedded = SqliteKeyServiceStore.open(brokerDir);
    await embedded.nextEpoch('g/#');
    await embedded.putMemberKey('a1', '1/1', new Uint8Array(32).fill(6));
    await embedded.close();
    const r = await cli(['keyservice', 'migrate', '--from', brokerDir, '--data', ksDir, '--db', url]);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/start the broker with --keyservice external/);
    for (const f of [KEY_SERVICE_DB_FILE, KEY_SERVICE_KEY_FILE]) expect(existsSync(join(brokerDir, f))).toBe(false);
    const reg = SqliteRegistry.open(brokerDir);
    expect(await reg.keyServiceMode()).toBe('external');
    await reg.close();
    const s = await openAt(url, ksDir);
    try {
      expect(await s.nextEpoch('g/#')).toBe(2);
      expect(await s.memberKey('a1')).toEqual({ identity: '1/1', key: new Uint8Array(32).fill(6) });
    } finally {
      await s.close();
    }
  });
});
