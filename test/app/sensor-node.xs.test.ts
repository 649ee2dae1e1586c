/**
 * The sensor-node state machine inside the real XS engine (xsnap): every
 * scenario of test/app/scenarios.ts must give exactly the summary it gives
 * under Node (the scenarios are deterministic: manual clock, seeded jitter).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startXs, type XsWorker } from '../xs/harness.js';
import { scenarios } from './scenarios.js';

let xs: XsWorker;
beforeAll(async () => {
  xs = await startXs(new URL('./sensor-node.xs-entry.ts', import.meta.url));
});
afterAll(async () => {
  await xs?.close();
});

describe('SensorNode under XS', () => {
  it('runs inside XS without Node globals or setTimeout', async () => {
    expect(await xs.call('engine')).toEqual({ hasProcess: false, hasSetTimeout: false });
  });
  for (const name of Object.keys(scenarios) as (keyof typeof scenarios)[]) {
    it(`scenario ${name} matches Node exactly`, async () => {
      const inXs = await xs.call(name);
      const inNode = JSON.parse(JSON.stringify(await scenarios[name]()));
      expect(inXs).toEqual(inNode);
    });
  }
  it('a node with wiped flash recovers by the counter hint under XS, with the real secure link and session', async () => {
    const r = await xs.call('wipedFlashRecovers');
    expect(r.wiped.stats).toMatchObject({ phase1: 1, failures: 1, published: 2 });
    expect(r.wiped.counter).toBe(33);
    expect(r.after.stats.phase2).toBe(1);
    expect(r.broker).toEqual({ phase1: 2, phase2: 2, hints: 1, refused: 0 });
  });
  it('the phase-1 boot, sleep and phase-2 wake hold under XS', async () => {
    const r = await xs.call('bootSleepWake');
    expect(r.firstBoot.phases).toEqual([1]);
    expect(r.wake.phases).toEqual([2]);
    expect(r.firstBoot.sleepRequests).toEqual([60_000]);
    expect(r.seqs).toEqual([0, 1, 32, 33, 64, 65]);
  });
});
