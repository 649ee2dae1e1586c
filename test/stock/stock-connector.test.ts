/**
 * The firmware StockConnector under Node and inside the real XS engine, the
 * same scenario (test/stock/connector-scenario.ts): phase 1 over PUBLISH,
 * phase 2 on the kept session, readings end to end to a reader, a recorded
 * token and a plain password refused, a power cut (§15.7), a wiped flash
 * (§5.5) and flash restored from an older copy recovered without an operator.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromHex } from '../../firmware/core/bytes.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { startXs, type XsWorker } from '../xs/harness.js';
import { connectorScenario, type ScenarioResult } from './connector-scenario.js';

const K1 = fromHex('101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f');
const K2 = fromHex('303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f');

let xs: XsWorker;
beforeAll(async () => {
  xs = await startXs(new URL('../xs/entries/stock.entry.ts', import.meta.url));
});
afterAll(async () => {
  await xs?.close();
});

function check(r: ScenarioResult): void {
  // wake 1: phase 1 then phase 2 on a new session; wakes 2, 3: phase 2, RC on the kept session;
  // after the power cut, the wiped flash and the older flash: phase 1 again (the session is still there)
  expect(r.connects).toEqual([
    [true, false],
    [false, true],
    [false, true],
    [true, true],
    [true, true],
    [true, true],
  ]);
  expect(r.read).toEqual([0, 1, 2, 3, 4, 5].map((n) => `xsnode01|sensors/xsnode01/t|reading ${n}`));
  // the two attacks, the power-cut device's first token (one counter block ahead) and the older flash's token
  expect(r.refusedLogins).toBe(4);
  expect(r.plaintextOnWire).toBe(false);
  expect(r.errors).toEqual([]);
}

describe('StockConnector (§15) under Node and XS', () => {
  it('under Node', async () => {
    check(await connectorScenario(createNodeCryptoSuite(), K1, K2));
  });

  it('inside XS', async () => {
    check((await xs.call('connectorScenario', K1, K2)) as ScenarioResult);
  }, 60_000);
});
