/** Module `firmware/platform/moddable/board-sleep` on ESP32 targets: the native deep-sleep binding (native/mqsec-sleep.c). */
import { deepSleep, wakeCause } from 'mqsec/sleep-native';

export const sleepNative: { deepSleep(ms: number): never; wakeCause(): 'cold' | 'timer' | 'other' } | undefined = Object.freeze({ deepSleep, wakeCause });
