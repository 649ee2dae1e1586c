/**
 * In-memory Storage with the limits of ESP32 NVS (`preference`): keys of 1 to
 * 15 characters, values of at most 4000 bytes. Firmware-safe, so it serves
 * tests under Node and XS alike, and devices that need no persistence.
 */
import { fail } from './errors.js';
import { STORAGE_KEY_MAX, STORAGE_VALUE_MAX, type Storage } from './platform.js';
import { isCharsOf, isIdChar } from './ascii.js';

/**
 * Keys every backend accepts: NVS allows up to 15 characters, and a file-per-key
 * backend needs names that are safe as file names (no leading dot, so never
 * '.' or '..'), so both share this charset.
 */
export function checkStorageKey(key: string): void {
  if (!isCharsOf(key, 1, STORAGE_KEY_MAX, isIdChar) || key.charCodeAt(0) === 0x2e) {
    fail('STORAGE', `invalid storage key ${JSON.stringify(key)}: 1..${STORAGE_KEY_MAX} of [A-Za-z0-9_.-], not starting with '.'`);
  }
}

export function checkStorageValue(value: Uint8Array): void {
  if (!(value instanceof Uint8Array)) fail('STORAGE', 'storage value must be a Uint8Array');
  if (value.length > STORAGE_VALUE_MAX) fail('STORAGE', `storage value of ${value.length} bytes exceeds ${STORAGE_VALUE_MAX}`);
}

export class MemoryStorage implements Storage {
  private readonly values = new Map<string, Uint8Array>();

  async get(key: string): Promise<Uint8Array | undefined> {
    checkStorageKey(key);
    const v = this.values.get(key);
    return v === undefined ? undefined : v.slice();
  }

  async put(key: string, value: Uint8Array): Promise<void> {
    checkStorageKey(key);
    checkStorageValue(value);
    this.values.set(key, value.slice());
  }

  async delete(key: string): Promise<void> {
    checkStorageKey(key);
    this.values.delete(key);
  }
}
