/**
 * An in-memory model of Moddable's `preference` module on an ESP32 (NVS),
 * enforcing the real limits so the adapter's checks are proven, not assumed:
 * domain and key names of at most 15 bytes (NVS_KEY_NAME_MAX_SIZE 16 with the
 * NUL), values of at most 4000 bytes, and each `set` one atomic write
 * (old or new value after a power cut). Counts writes per key so tests can
 * prove that counter blocks save flash writes.
 */
import type { PreferenceApi } from '../../firmware/platform/moddable/preference-storage.js';

type Value = string | boolean | number | ArrayBuffer;

export class NvsModel implements PreferenceApi {
  readonly store = new Map<string, Value>();
  writes = 0;
  erases = 0;
  readonly writesByKey = new Map<string, number>();
  /** The next `set` fails (like nvs_set_blob returning an error), leaving the old value. */
  failNextSet = false;
  /** Power is cut during the next `set`: NVS keeps the old value (atomic write), and then the device is "off". */
  cutPowerOnNextSet = false;
  powered = true;

  private name(domain: string, key: string): string {
    if (!this.powered) throw new Error('device is off');
    if (new TextEncoder().encode(domain).length > 15) throw new Error('nvs_open fail');
    if (new TextEncoder().encode(key).length > 15 || key.length === 0) throw new Error('nvs set fail');
    return `${domain}\u0000${key}`;
  }

  set(domain: string, key: string, value: Value): void {
    const k = this.name(domain, key);
    if (value instanceof ArrayBuffer && value.byteLength > 4000) throw new Error('nvs set fail');
    if (this.failNextSet) {
      this.failNextSet = false;
      throw new Error('nvs set fail');
    }
    if (this.cutPowerOnNextSet) {
      this.cutPowerOnNextSet = false;
      this.powered = false;
      throw new Error('power lost');
    }
    this.writes++;
    this.writesByKey.set(key, (this.writesByKey.get(key) ?? 0) + 1);
    this.store.set(k, value instanceof ArrayBuffer ? value.slice(0) : value);
  }

  get(domain: string, key: string): Value | undefined {
    const v = this.store.get(this.name(domain, key));
    return v instanceof ArrayBuffer ? v.slice(0) : v;
  }

  delete(domain: string, key: string): void {
    const k = this.name(domain, key);
    if (!this.store.has(k)) throw new Error('nvs erase fail'); // what the ESP32 module does for a missing key
    this.erases++;
    this.store.delete(k);
  }

  keys(domain: string): string[] {
    const prefix = `${domain}\u0000`;
    return [...this.store.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
  }

  /** Power back on (RAM state of the device is gone; flash is what it is). */
  reboot(): void {
    this.powered = true;
  }
}
