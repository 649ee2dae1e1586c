export * from './errors.js';
export * from './bytes.js';
export * from './ascii.js';
export * from './utf8.js';
export * from './varint.js';
export * from './platform.js';
export * from './memory-storage.js';
