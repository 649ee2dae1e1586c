/**
 * `Storage` over Moddable's `preference` module (ESP-IDF NVS on an ESP32, a
 * JSON file on the desktop `lin` target).
 *
 * Limits enforced here, before NVS sees the call, so the same code fails the
 * same way under test: domain and key names 1..15 characters (NVS
 * NVS_KEY_NAME_MAX_SIZE is 16 including the NUL), values at most 4000 bytes
 * (the Moddable preference module's documented maximum; NVS blobs span pages
 * but Moddable keeps values small).
 *
 * Atomicity (the Storage contract): on an ESP32, `Preference.set` is
 * nvs_set_blob + nvs_commit. NVS writes a new entry and only then erases the
 * old one, so after a power cut the key holds the old or the new value, never
 * a mix (ESP-IDF "Non-volatile Storage Library", section "Internals"). The
 * desktop `lin` implementation rewrites one JSON file and is NOT power-cut
 * safe; it exists for tests.
 *
 * Flash wear: callers that keep counters must reserve blocks (see
 * firmware/app/reserved-counter.ts and the secure session's counterBlock) so
 * NVS is written once per block, not on every connect.
 *
 * The preference module is injected (this file imports nothing from the SDK)
 * so the adapter logic is tested under Node against an NVS model.
 */
import { MqsecError, fail } from '../../core/errors.js';
import type { Storage } from '../../core/platform.js';
import { STORAGE_KEY_MAX, STORAGE_VALUE_MAX } from '../../core/platform.js';
import { isCharsOf, isIdChar } from '../../core/ascii.js';

/** The shape of Moddable's `preference` module default export. */
export interface PreferenceApi {
  set(domain: string, key: string, value: string | boolean | number | ArrayBuffer): void;
  get(domain: string, key: string): string | boolean | number | ArrayBuffer | undefined;
  delete(domain: string, key: string): void;
  keys(domain: string): string[];
}

export function checkPreferenceName(kind: 'domain' | 'key', name: string): void {
  if (name.length < 1 || name.length > STORAGE_KEY_MAX) fail('STORAGE', `${kind} name must be 1..${STORAGE_KEY_MAX} characters`);
  // ASCII only: NVS counts bytes, and a multi-byte character would slip past a length-in-characters check.
  if (!isCharsOf(name, 1, STORAGE_KEY_MAX, isIdChar)) fail('STORAGE', `${kind} name must be ASCII letters, digits, '_', '.', '-'`);
}

export class PreferenceStorage implements Storage {
  constructor(
    private readonly prefs: PreferenceApi,
    private readonly domain = 'mqsec',
  ) {
    checkPreferenceName('domain', domain);
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    checkPreferenceName('key', key);
    let v: ReturnType<PreferenceApi['get']>;
    try {
      v = this.prefs.get(this.domain, key);
    } catch (e) {
      // ESP32 throws "nvs get fail" for real read errors; a missing key is undefined.
      throw new MqsecError('STORAGE', `read ${key} failed`);
    }
    if (v === undefined) return undefined;
    if (!(v instanceof ArrayBuffer)) fail('STORAGE', `${key} does not hold bytes`);
    // Copy: the caller may keep and zeroize it.
    return new Uint8Array(v.slice(0));
  }

  async put(key: string, value: Uint8Array): Promise<void> {
    checkPreferenceName('key', key);
    if (value.length > STORAGE_VALUE_MAX) fail('OVERSIZE', `value for ${key} is ${value.length} bytes (max ${STORAGE_VALUE_MAX})`);
    // preference stores ArrayBuffers; pass an exact-length copy (value may be a view into a larger buffer).
    const ab = new ArrayBuffer(value.length);
    new Uint8Array(ab).set(value);
    try {
      this.prefs.set(this.domain, key, ab);
    } catch (e) {
      throw new MqsecError('STORAGE', `write ${key} failed`);
    }
  }

  async delete(key: string): Promise<void> {
    checkPreferenceName('key', key);
    try {
      this.prefs.delete(this.domain, key);
    } catch {
      // ESP32 reports "nvs erase fail" also for a key that does not exist: deleting nothing is
      // success, so only a key that is still there counts as a failure.
      let still = true;
      try {
        still = this.prefs.get(this.domain, key) !== undefined;
      } catch {
        // unreadable: report the failed delete below
      }
      if (still) fail('STORAGE', `delete ${key} failed`);
    }
  }

  /** Keys currently stored in this domain (diagnostics, factory reset). */
  keys(): string[] {
    return this.prefs.keys(this.domain);
  }

  /** Factory reset: deletes every key of the domain (keys and secrets of this device). */
  async clear(): Promise<void> {
    for (const k of this.keys()) await this.delete(k);
  }
}
