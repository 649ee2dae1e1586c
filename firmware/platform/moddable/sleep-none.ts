/** Module `firmware/platform/moddable/board-sleep` on builds without deep sleep (desktop `lin`): the node stays connected and waits. */
export const sleepNative: { deepSleep(ms: number): never; wakeCause(): 'cold' | 'timer' | 'other' } | undefined = undefined;
