/**
 * Node implementations of the small platform services, and createNodePlatform
 * to assemble a whole Platform for the host simulator.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { silentLog, type Clock, type Log, type Platform, type Random, type Storage, type Timer } from '../../firmware/core/platform.js';
import { nodeRandom } from '../../platform-node/random.js';
import { FileStorage } from './file-storage.js';
import { NodeTcpTransport, type NodeTcpTransportOptions } from './tcp-transport.js';

export const nodeTimer: Timer = {
  set: (callback, ms) => setTimeout(callback, ms),
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** Monotonic, like the device's: performance.now(), not Date.now(). */
export const nodeClock: Clock = {
  now: () => performance.now(),
};

export { nodeRandom };

function line(level: string, msg: string, fields?: Record<string, unknown>): string {
  return fields ? `${level} ${msg} ${JSON.stringify(fields)}` : `${level} ${msg}`;
}

/** Log to the console (stderr for warnings and errors). */
export const consoleLog: Log = {
  debug: (msg, fields) => console.debug(line('debug', msg, fields)),
  info: (msg, fields) => console.info(line('info', msg, fields)),
  warn: (msg, fields) => console.warn(line('warn', msg, fields)),
  error: (msg, fields) => console.error(line('error', msg, fields)),
};

/** Log through a pino logger (structured fields stay structured). */
export function pinoLog(logger: Logger): Log {
  return {
    debug: (msg, fields) => logger.debug(fields ?? {}, msg),
    info: (msg, fields) => logger.info(fields ?? {}, msg),
    warn: (msg, fields) => logger.warn(fields ?? {}, msg),
    error: (msg, fields) => logger.error(fields ?? {}, msg),
  };
}

export interface NodePlatformOptions {
  /** Directory for FileStorage; without it, storage is in memory. */
  storageDir?: string;
  storage?: Storage;
  log?: Log;
  tcp?: NodeTcpTransportOptions;
}

export function createNodePlatform(options: NodePlatformOptions = {}): Platform {
  return {
    transport: new NodeTcpTransport(options.tcp),
    clock: nodeClock,
    timer: nodeTimer,
    random: nodeRandom,
    storage: options.storage ?? (options.storageDir !== undefined ? new FileStorage(options.storageDir) : new MemoryStorage()),
    log: options.log ?? silentLog,
  };
}
