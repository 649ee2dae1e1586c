/**
 * Messages between the fleet (main thread) and a device group running in a
 * worker thread. Worker -> main traffic is batched (one `batch` per
 * BATCH_INTERVAL_MS at most) so a large fleet costs a few messages a second
 * per worker, not one per reading.
 */
import type { GroupConfig, GroupFaults } from './device-group.js';

export const BATCH_INTERVAL_MS = 100;
/** Captured CONNECTs forwarded per batch: the attackers keep a small sample anyway. */
export const MAX_CAPTURES_PER_BATCH = 8;

export interface GroupWorkerData {
  config: GroupConfig;
  /** pino level for device logs in the worker (stderr), e.g. 'silent' or 'debug'. */
  logLevel: string;
}

export type MainToWorker =
  | { t: 'start' }
  | { t: 'faults'; faults: Partial<GroupFaults> }
  | { t: 'quiesce' }
  | { t: 'wake' }
  | { t: 'flush'; id: number }
  | { t: 'stop' };

export interface EventBatch {
  t: 'batch';
  /** [topic, payload] of readings handed to the secure link. */
  sent: [string, Uint8Array][];
  /** [topic, payload] of readings unacknowledged at a power cut. */
  uncertain: [string, Uint8Array][];
  /** [devId, phase, ms, afterQuiesce] per completed secure session. */
  ready: [string, 1 | 2, number, boolean][];
  /** Device-side errors (each retried) by the code the node reported. */
  errors: Record<string, number>;
  drops: number;
  powerCuts: number;
  captures: Uint8Array[];
  /** [devId, name, value] of commands nodes applied. */
  commands: [string, string, string][];
  /** Nodes connected with a secure session at the time of the batch. */
  connected: number;
}

export type WorkerToMain =
  | { t: 'loaded'; threadId: number }
  | EventBatch
  | { t: 'flushed'; id: number }
  | { t: 'stopped' }
  | { t: 'fatal'; message: string };
