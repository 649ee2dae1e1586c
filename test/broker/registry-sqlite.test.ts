/** The registry storage suite (test/broker/registry-store.ts) on SQLite, the one-node default. */
import { afterAll } from 'vitest';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { registryStoreSuite } from './registry-store.js';
import { tempDir } from './helpers.js';

const dirs: ReturnType<typeof tempDir>[] = [];
afterAll(() => dirs.forEach((d) => d.remove()));

registryStoreSuite('sqlite', () => ({
  async open({ now, memberKeys }) {
    const d = tempDir('mqsec-regstore-');
    dirs.push(d);
    return SqliteRegistry.open(d.path, { now, memberKeys });
  },
  async reopen(r) {
    await r.close();
    return SqliteRegistry.open(r.dataDir);
  },
}));
