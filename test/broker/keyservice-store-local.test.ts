/** The key service store suite (test/broker/keyservice-store.ts) in memory and on SQLite (the one-process default). */
import { afterAll } from 'vitest';
import { join } from 'node:path';
import { MemoryKeyServiceStore, SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { keyServiceStoreSuite } from './keyservice-store.js';
import { tempDir } from './helpers.js';

const dirs: ReturnType<typeof tempDir>[] = [];
afterAll(() => dirs.forEach((d) => d.remove()));

keyServiceStoreSuite('memory', () => ({
  open: async () => new MemoryKeyServiceStore(),
  second: async (s) => s,
}));

keyServiceStoreSuite('sqlite', () => {
  const d = tempDir('mqsec-ks-');
  dirs.push(d);
  const file = join(d.path, 'keyservice.db');
  return {
    open: async () => new SqliteKeyServiceStore(file),
    reopen: async (s) => (await s.close(), new SqliteKeyServiceStore(file)),
    second: async () => new SqliteKeyServiceStore(file),
  };
});
