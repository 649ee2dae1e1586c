/**
 * The registry storage suite (test/broker/registry-store.ts) on PostgreSQL:
 * one real server for the file (test/helpers/postgres.ts), a fresh database
 * per test. Every node of one registry shares the database and holds the same
 * master.key in its own data directory, so `reopen` opens the database again
 * from a second data directory with a copy of the key.
 */
import { afterAll, beforeAll } from 'vitest';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { PgRegistry } from '../../broker/registry/pg-registry.js';
import { MASTER_KEY_FILE } from '../../broker/registry/secrets.js';
import { startPostgres, type RunningPostgres } from '../helpers/postgres.js';
import { registryStoreSuite } from './registry-store.js';
import { tempDir } from './helpers.js';

let server: RunningPostgres;
const dirs: ReturnType<typeof tempDir>[] = [];
const urls = new WeakMap<object, string>();
beforeAll(async () => {
  server = await startPostgres();
}, 60_000);
afterAll(async () => {
  await server?.stop();
  dirs.forEach((d) => d.remove());
});

registryStoreSuite('postgres', () => ({
  async open({ now, memberKeys }) {
    const d = tempDir('mqsec-regstore-pg-');
    dirs.push(d);
    const url = await server.createDatabase();
    const r = await PgRegistry.open({ url, dataDir: d.path, now, memberKeys });
    urls.set(r, url);
    return r;
  },
  async reopen(r) {
    await r.close();
    const other = tempDir('mqsec-regstore-pg-node2-');
    dirs.push(other);
    copyFileSync(join(r.dataDir, MASTER_KEY_FILE), join(other.path, MASTER_KEY_FILE));
    return PgRegistry.open({ url: urls.get(r)!, dataDir: other.path });
  },
}));
