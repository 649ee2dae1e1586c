export * from './membership.js';
export * from './store.js';
export * from './key-service.js';
export * from './link.js';
export * from './agent.js';
