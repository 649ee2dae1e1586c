/**
 * `Storage` in files through the Moddable SDK's `file` module, one file per
 * key: the desktop (`lin`) build's storage. ESP32 builds use NVS through
 * `preference` (preference-storage.ts).
 *
 * Why not `preference` on the desktop: the SDK's `lin` preference module keeps
 * every value in one JSON file that it deletes and rewrites on each `set`, so
 * a process killed in between loses every key, which breaks the Storage
 * contract (after a cut, the old or the new value). Here `put` writes a
 * temporary file, closes it and renames it over the key's file: rename(2) is
 * atomic, so a process killed at any point leaves the old or the new value.
 * (Against a power cut the data would also need fsync, which the SDK's file
 * module does not offer; the desktop target has no power to cut.)
 *
 * The `file` module is injected (this file imports nothing from the SDK), so
 * the logic is tested under Node and XS against a model of it that can be
 * killed between any two calls.
 */
import { MqsecError, fail } from '../../core/errors.js';
import { checkStorageKey, checkStorageValue } from '../../core/memory-storage.js';
import type { Storage } from '../../core/platform.js';

/** The parts of the SDK's `file` module (modules/files/file/file.js) this adapter uses. */
export interface FileHandle {
  read(type: typeof ArrayBuffer): ArrayBuffer;
  write(data: ArrayBuffer): void;
  close(): void;
  readonly length: number;
}

export interface FileApi {
  /** `new File(path, write)`: opens for reading, or for writing (created when missing, not truncated). */
  open(path: string, write: boolean): FileHandle;
  exists(path: string): boolean;
  delete(path: string): boolean;
  /** Renames within the same directory (`to` is a bare file name, as the SDK's File.rename takes it). */
  rename(from: string, to: string): boolean;
  createDirectory(path: string): void;
}

export interface FileStorageOptions {
  /**
   * Called half-way through writing the temporary file of a `put`, with the
   * key: the desktop run's restart check stops the process there to prove a
   * kill in the middle of a write loses nothing.
   */
  midWrite?: (key: string) => void;
}

export class FileStorage implements Storage {
  private readonly dir: string;
  private dirReady = false;

  /** `root` ends with '/' (the SDK's config.file.root does); files go to `<root><name>/`. */
  constructor(
    private readonly files: FileApi,
    root: string,
    name = 'mqsec',
    private readonly options: FileStorageOptions = {},
  ) {
    checkStorageKey(name);
    this.dir = `${root}${name}/`;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    checkStorageKey(key);
    const path = this.dir + key;
    try {
      if (!this.files.exists(path)) return undefined;
      const f = this.files.open(path, false);
      try {
        // The SDK refuses to read zero bytes ("read past end of file").
        return f.length === 0 ? new Uint8Array(0) : new Uint8Array(f.read(ArrayBuffer));
      } finally {
        f.close();
      }
    } catch (e) {
      throw e instanceof MqsecError ? e : new MqsecError('STORAGE', `read ${key} failed`);
    }
  }

  async put(key: string, value: Uint8Array): Promise<void> {
    checkStorageKey(key);
    checkStorageValue(value);
    // Keys never start with '.', so the temporary name cannot be another key's file.
    const temp = `${this.dir}.${key}.new`;
    const half = value.length >> 1;
    try {
      this.ensureDirectory();
      // `new File(path, true)` does not truncate: start the temporary file from nothing.
      if (this.files.exists(temp)) this.files.delete(temp);
      const f = this.files.open(temp, true);
      try {
        f.write(copy(value, 0, half));
        this.options.midWrite?.(key);
        f.write(copy(value, half, value.length));
      } finally {
        f.close();
      }
      if (!this.files.rename(temp, key)) fail('STORAGE', `write ${key} failed (rename)`);
    } catch (e) {
      throw e instanceof MqsecError ? e : new MqsecError('STORAGE', `write ${key} failed`);
    }
  }

  async delete(key: string): Promise<void> {
    checkStorageKey(key);
    const path = this.dir + key;
    try {
      if (this.files.exists(path) && !this.files.delete(path)) fail('STORAGE', `delete ${key} failed`);
    } catch (e) {
      throw e instanceof MqsecError ? e : new MqsecError('STORAGE', `delete ${key} failed`);
    }
  }

  private ensureDirectory(): void {
    if (this.dirReady) return;
    // The SDK throws when the directory exists; whether it does is checked by the write that follows.
    try {
      this.files.createDirectory(this.dir);
    } catch {
      // exists already
    }
    this.dirReady = true;
  }
}

/** An exact-length ArrayBuffer of value[from, to) (the SDK's write takes ArrayBuffers, not views). */
function copy(value: Uint8Array, from: number, to: number): ArrayBuffer {
  const ab = new ArrayBuffer(to - from);
  new Uint8Array(ab).set(value.subarray(from, to));
  return ab;
}
