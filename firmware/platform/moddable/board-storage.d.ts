/**
 * Module `firmware/platform/moddable/board-storage`: mapped by the board
 * fragments to storage-preference.ts (NVS) on ESP32 targets and to
 * storage-file.ts on the desktop. This declaration types the import in
 * services.ts.
 */
import type { Storage } from '../../core/platform.js';
export declare function createStorage(): Storage;
