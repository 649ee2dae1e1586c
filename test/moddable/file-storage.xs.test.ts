/**
 * The desktop build's FileStorage inside the real XS engine: the kill-anywhere
 * scenario of file-storage.test.ts gives the same results as under Node.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startXs, type XsWorker } from '../xs/harness.js';
import { killDuringPuts } from './file-model.js';

let xs: XsWorker;
beforeAll(async () => {
  xs = await startXs(new URL('./file-storage.xs-entry.ts', import.meta.url));
});
afterAll(async () => {
  await xs?.close();
});

describe('FileStorage under XS', () => {
  it('really runs inside XS', async () => {
    expect(await xs.call('engine')).toEqual({ hasProcess: false });
  });

  it('killed at any file call: same outcome as Node, and always the old or the new value', async () => {
    let killedRuns = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 24 }), { minLength: 1, maxLength: 4 }), fc.integer({ min: 1, max: 40 }), async (values, killAt) => {
        const want = await killDuringPuts(values, killAt);
        const got = await xs.call<typeof want>('killDuringPuts', values, killAt);
        expect(got).toEqual(want);
        if (got.killed) killedRuns++;
      }),
      { numRuns: 120 },
    );
    expect(killedRuns).toBeGreaterThan(10);
  });
});
