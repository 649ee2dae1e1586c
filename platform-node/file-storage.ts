/**
 * Storage in a directory, one file per key, for Node (the host simulator's devices, the app SDK): the Node
 * stand-in for ESP32 NVS. `put` is atomic and durable like NVS: write a
 * temporary file, fsync it, rename it over the key, fsync the directory.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { asMqsecError, MqsecError } from '../firmware/core/errors.js';
import { checkStorageKey, checkStorageValue } from '../firmware/core/memory-storage.js';
import type { Storage } from '../firmware/core/platform.js';

function isNotFound(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === 'ENOENT';
}

function storageError(e: unknown, what: string): MqsecError {
  return e instanceof MqsecError ? e : new MqsecError('STORAGE', `${what}: ${asMqsecError(e).message}`);
}

export class FileStorage implements Storage {
  private ready: Promise<void> | undefined;

  constructor(readonly dir: string) {}

  private ensureDir(): Promise<void> {
    // A failure is not cached: the next put tries again (the directory may appear later).
    this.ready ??= mkdir(this.dir, { recursive: true, mode: 0o700 }).then(
      () => undefined,
      (e) => {
        this.ready = undefined;
        throw e;
      },
    );
    return this.ready;
  }

  private file(key: string): string {
    checkStorageKey(key);
    return path.join(this.dir, key);
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const file = this.file(key);
    try {
      return new Uint8Array(await readFile(file));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw storageError(e, `read ${key}`);
    }
  }

  async put(key: string, value: Uint8Array): Promise<void> {
    const file = this.file(key);
    checkStorageValue(value);
    try {
      await this.ensureDir();
      // The temporary name cannot collide with a key: keys never contain '.'.
      const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
      const fh = await open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(value);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, file);
      const dh = await open(this.dir, 'r');
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    } catch (e) {
      throw storageError(e, `write ${key}`);
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.file(key);
    try {
      await unlink(file);
    } catch (e) {
      if (!isNotFound(e)) throw storageError(e, `delete ${key}`);
    }
  }
}
