/** XS side of test/app/e2e-device.xs.test.ts: the §14 device scenarios, run inside the XS engine. */
import { exposeToHost } from '../xs/guest.js';
import { e2eScenarios, overheadFor } from './e2e-scenarios.js';

exposeToHost({
  engine: () => ({ hasProcess: typeof (globalThis as any).process !== 'undefined', hasBuffer: typeof (globalThis as any).Buffer !== 'undefined' }),
  overhead64: () => overheadFor(64),
  ...e2eScenarios,
});
