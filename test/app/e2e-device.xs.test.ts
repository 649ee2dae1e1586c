/**
 * The device side of end-to-end topic keys (docs/protocol.md §14) inside the
 * real XS engine (xsnap): every scenario of test/app/e2e-scenarios.ts must
 * give exactly the summary it gives under Node (deterministic: manual clock,
 * seeded randomness), so the assertions of e2e-device.test.ts hold in XS too.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startXs, type XsWorker } from '../xs/harness.js';
import { e2eScenarios, overheadFor } from './e2e-scenarios.js';

let xs: XsWorker;
beforeAll(async () => {
  xs = await startXs(new URL('./e2e-device.xs-entry.ts', import.meta.url));
});
afterAll(async () => {
  await xs?.close();
});

describe('device end to end (§14) under XS', () => {
  it('runs inside XS without Node globals', async () => {
    expect(await xs.call('engine')).toEqual({ hasProcess: false, hasBuffer: false });
  });
  for (const name of Object.keys(e2eScenarios) as (keyof typeof e2eScenarios)[]) {
    it(`scenario ${name} matches Node exactly`, async () => {
      const inXs = await xs.call(name);
      const inNode = JSON.parse(JSON.stringify(await e2eScenarios[name]()));
      expect(inXs).toEqual(inNode);
    });
  }
  it('the key properties hold in XS', async () => {
    const a = await xs.call('readingsAndCommands');
    expect(a.first.modes).toEqual({ reading: 'e2e', command: 'e2e', other: 'hop' });
    expect(a.attacks).toEqual({ intervalS: 20, commands: 1, e2eDropped: 3 });
    const b = await xs.call('resendAcrossDrops');
    expect(b.opened).toEqual([0, 1, 2, 3, 4, 5]);
    expect(b.appDropped).toEqual(['REPLAY']);
    expect(await xs.call('overhead64')).toEqual(overheadFor(64));
  });
});
