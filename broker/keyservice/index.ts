export * from './membership.js';
export * from './store.js';
export * from './key-service.js';
