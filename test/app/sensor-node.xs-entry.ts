/** XS side of test/app/sensor-node.xs.test.ts: the same scenarios, run inside the XS engine. */
import { exposeToHost } from '../xs/guest.js';
import { scenarios } from './scenarios.js';

exposeToHost({
  engine: () => ({ hasProcess: typeof (globalThis as any).process !== 'undefined', hasSetTimeout: typeof (globalThis as any).setTimeout !== 'undefined' }),
  ...scenarios,
});
