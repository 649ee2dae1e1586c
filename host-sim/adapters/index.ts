export * from './tcp-transport.js';
export * from './file-storage.js';
export * from './node-platform.js';
export { MemoryStorage } from '../../firmware/core/memory-storage.js';
