// The simulator's device flash is the Node platform's file storage (shared with the app SDK).
export { FileStorage } from '../../platform-node/file-storage.js';
