/**
 * The package's Node API (`import { connectApp } from 'mqsec'`): the app SDK.
 * Keep this list in step with sdk/package-entry.mjs (test/sdk/package.test.ts
 * compares them).
 */
export {
  connectApp,
  MqsecApp,
  type AppEvents,
  type AppState,
  type ConnectAppOptions,
  type MessageInfo,
  type OnlineInfo,
  type ReconnectOptions,
} from './app.js';
export type { BrokerFlavour } from './transport.js';
export { readAppConfig, type AppConfig } from './config.js';
export { MqsecError, isMqsecError, type ErrorCode } from '../firmware/core/errors.js';
export { MemoryStorage } from '../firmware/core/memory-storage.js';
export type { Storage } from '../firmware/core/platform.js';
export { FileStorage } from '../platform-node/file-storage.js';
