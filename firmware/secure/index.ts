export * from './constants.js';
export * from './base64url.js';
export * from './key-schedule.js';
export * from './messages.js';
export * from './envelope.js';
export * from './device.js';
export * from './server.js';
export * from './ticket-store.js';
