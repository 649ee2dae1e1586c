/**
 * The sensor-node app with `broker.flavour: "stock"` (firmware/app/device-link.ts
 * picks StockSecureLink; docs/protocol.md §15) under Node and inside the real
 * XS engine: the same scenario (sensor-node-scenario.ts) against the
 * in-memory stock broker + key service, identical summaries. Phase 1 then
 * phase 2, readings end to end, a command queued while the node slept held
 * until the group keys arrive and applied, a plaintext command dropped, a
 * lost PUBACK resent from the outbox and read exactly once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromHex } from '../../firmware/core/bytes.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { startXs, type XsWorker } from '../xs/harness.js';
import { stockSensorNodeScenario, type StockNodeResult } from './sensor-node-scenario.js';

const K1 = fromHex('505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f');
const K2 = fromHex('707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f');

let xs: XsWorker;
beforeAll(async () => {
  xs = await startXs(new URL('../xs/entries/stock.entry.ts', import.meta.url));
});
afterAll(async () => {
  await xs?.close();
});

function check(r: StockNodeResult): void {
  const [first, second, third] = r.wakes;
  // cold boot: phase 1 (bootstrap + first phase 2), two readings, deep sleep at the default interval
  expect(first.phases).toEqual([1]);
  expect(first.stats).toMatchObject({ phase1: 1, phase2: 0, published: 2, commands: 0, failures: 0 });
  expect(first.sleepRequests).toEqual([60_000]);
  // wake: phase 2; the queued e2e command was held until the keys came, then applied; the plaintext one dropped
  expect(second.phases).toEqual([2]);
  expect(second.stats).toMatchObject({ phase1: 0, phase2: 1, published: 2, commands: 1, badCommands: 0 });
  expect(second.intervalS).toBe(120);
  expect(second.sleepRequests).toEqual([120_000]);
  expect(second.dropped.length).toBe(1);
  // wake with a lost PUBACK: one failure, a second phase 2, the envelope sent again
  expect(third.phases).toEqual([2, 2]);
  expect(third.stats.failures).toBe(1);
  expect(third.sleepRequests).toEqual([120_000]);
  // every reading the node handed over was read once, and the resent copy was refused as a replay
  const sent = [...new Set(r.sent)].sort();
  expect(r.read.map((x) => x.slice(x.indexOf('|') + 1)).sort()).toEqual(sent);
  expect(r.read.every((x) => x.startsWith('stnode01|sensors/stnode01/'))).toBe(true);
  expect(r.appDropped).toEqual(['REPLAY']);
  expect(r.refusedLogins).toBe(0);
  expect(r.plaintextOnWire).toBe(false);
}

describe('sensor node on a stock broker (§15), Node and XS', () => {
  let inNode: StockNodeResult;
  it('under Node', async () => {
    inNode = await stockSensorNodeScenario(createNodeCryptoSuite(), K1, K2);
    check(inNode);
  });

  it('inside XS, with the same summary as under Node', async () => {
    const inXs = (await xs.call('stockSensorNode', K1, K2)) as StockNodeResult;
    check(inXs);
    expect(inXs).toEqual(JSON.parse(JSON.stringify(inNode)));
  }, 60_000);
});
