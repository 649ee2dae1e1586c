/**
 * Module `firmware/platform/moddable/board-sleep`: mapped by the manifest to
 * sleep-esp32.ts (native deep sleep) on ESP32 targets and to sleep-none.ts on
 * the desktop. This declaration types the import in main.ts.
 */
export declare const sleepNative: { deepSleep(ms: number): never; wakeCause(): 'cold' | 'timer' | 'other' } | undefined;
