/**
 * Module `firmware/platform/moddable/board-storage` on ESP32 targets
 * (boards/esp32-common.json): NVS through the SDK's `preference` module.
 *
 * Preloading this module is safe: on ESP32 `preference` is a class of native
 * static methods (modules/files/preference/esp32/modPreference.c opens, writes
 * and commits an NVS handle per call) with no JavaScript state to freeze. The
 * desktop `lin` variant of `preference` keeps its values in a JavaScript
 * object, which preloading would freeze into the image: the desktop build
 * maps board-storage to storage-file.ts instead and never imports
 * `preference` (test/moddable/manifest.test.ts checks both).
 */
import Preference from 'preference';
import type { Storage } from '../../core/platform.js';
import { PreferenceStorage } from './preference-storage.js';

export function createStorage(): Storage {
  return new PreferenceStorage(Preference, 'mqsec');
}
