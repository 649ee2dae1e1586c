/**
 * A principal provisioned a moment before it connects: the broker already
 * accepts its login, but the key service has not yet received the policy
 * that lists it (the broker polls the registry), so its first key request
 * is refused and not answered at all (§14.6). The SDK must ask again while
 * it waits, not sit out its key timeout and give up on the first connect.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connectApp } from '../../sdk/index.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import type { RunningBroker } from '../../broker/server.js';
import { tempDir, testBroker } from '../broker/helpers.js';

const dir = tempDir('mqsec-sdk-fresh-');
let broker: RunningBroker;

beforeAll(async () => {
  // the key service learns of registry changes only with the next poll, 1.5 s away
  broker = await testBroker(dir.path, { revisionPollMs: 1500 });
  await broker.registry.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
  await broker.registry.addDevice('dev1', 'sensor');
  await broker.syncRegistry();
}, 60_000);

afterAll(async () => {
  await broker?.stop();
  dir.remove();
});

it('a just-provisioned app gets its keys on the first connect: the unanswered request is made again', async () => {
  const key = (await broker.registry.addDevice('fresh-app', 'app')).key; // no sync: the key service does not know it yet
  const t0 = performance.now();
  const app = await connectApp({ url: `mqtt://127.0.0.1:${broker.port}`, id: 'fresh-app', key, storage: new MemoryStorage(), keyTimeoutMs: 6000 });
  const ms = performance.now() - t0;
  try {
    expect(app.groups().map((g) => g.filter)).toContain('sensors/dev1/#'); // it reads every sensor's readings
    console.log(`first connect of a just-provisioned app: online after ${Math.round(ms)} ms (registry poll 1.5 s)`);
  } finally {
    await app.end();
  }
}, 30_000);
