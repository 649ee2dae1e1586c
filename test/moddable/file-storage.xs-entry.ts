/** XS side of file-storage.xs.test.ts: FileStorage and its kill scenario inside the real XS engine. */
import { exposeToHost } from '../xs/guest.js';
import { killDuringPuts } from './file-model.js';

exposeToHost({
  engine: () => ({ hasProcess: typeof (globalThis as any).process !== 'undefined' }),
  killDuringPuts: (values: Uint8Array[], killAt: number) => killDuringPuts(values, killAt),
});
