// Boots a device-group worker thread: registers the TypeScript loader (tsx)
// in this thread, whose module loader is its own, then loads the entry.
// (Node 20 does not pass `--import tsx` through a Worker's execArgv to a .ts
// entry, and a loader registered in the main thread does not reach workers.)
import { register } from 'tsx/esm/api';

register();
await import('./group-worker.ts');
