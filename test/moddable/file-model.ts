/**
 * A model of the Moddable SDK's `file` module on the desktop target
 * (modules/files/file/lin/modFile.c) for FileStorage: `new File(path, true)`
 * opens without truncating (fopen "rb+", else "wb+"), reading zero bytes
 * throws, rename(2) replaces the target atomically, Directory.create fails
 * only if mkdir fails for another reason than EEXIST. The process can be
 * "killed" before any call: every later call throws, and what was written so
 * far stays on "disk". Platform-free, so the kill scenario runs under Node
 * and inside XS.
 */
import type { FileApi, FileHandle } from '../../firmware/platform/moddable/file-storage.js';
import { FileStorage } from '../../firmware/platform/moddable/file-storage.js';
import { toHex } from '../../firmware/core/bytes.js';

export class Killed extends Error {}

/** 'ok', or the error code a Storage promise rejected with (shared by the storage tests). */
export async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e: any) {
    return e.code ?? `raw:${e.message}`;
  }
}

export class FileModel {
  readonly files = new Map<string, Uint8Array>();
  readonly dirs = new Set<string>();
  calls = 0;
  /** The process dies before the call with this number (1-based); 0: never. */
  killAt = 0;

  private step(): void {
    this.calls++;
    if (this.killAt > 0 && this.calls >= this.killAt) throw new Killed('killed');
  }

  private dirOf(path: string): string {
    return path.slice(0, path.lastIndexOf('/') + 1);
  }

  /** A fresh process over the same disk. */
  restart(): FileApi {
    this.killAt = 0;
    this.calls = 0;
    return this.api();
  }

  api(): FileApi {
    return {
      open: (path, write) => {
        this.step();
        if (!this.dirs.has(this.dirOf(path))) throw new Error('file not found');
        if (!this.files.has(path)) {
          if (!write) throw new Error('file not found');
          this.files.set(path, new Uint8Array(0));
        }
        const model = this;
        let position = 0;
        const handle: FileHandle = {
          get length() {
            return model.files.get(path)!.length;
          },
          read() {
            model.step();
            const data = model.files.get(path)!;
            if (position >= data.length) throw new Error('read past end of file');
            const out = data.slice(position).buffer;
            position = data.length;
            return out;
          },
          write(ab) {
            model.step();
            const data = model.files.get(path)!;
            const add = new Uint8Array(ab);
            const next = new Uint8Array(Math.max(data.length, position + add.length));
            next.set(data);
            next.set(add, position);
            position += add.length;
            model.files.set(path, next);
          },
          close() {
            model.step();
          },
        };
        return handle;
      },
      exists: (path) => {
        this.step();
        return this.files.has(path) || this.dirs.has(path);
      },
      delete: (path) => {
        this.step();
        return this.files.delete(path);
      },
      rename: (from, to) => {
        this.step();
        const data = this.files.get(from);
        if (data === undefined || to.includes('/')) return false;
        this.files.delete(from);
        this.files.set(this.dirOf(from) + to, data);
        return true;
      },
      createDirectory: (path) => {
        this.step();
        if (!this.dirs.has(this.dirOf(path.slice(0, -1)))) throw new Error('failed');
        this.dirs.add(path);
      },
    };
  }
}

/**
 * Writes `values` to one key in turn and kills the process before call
 * number `killAt`; restarts and reads the key back. Returns what was read,
 * with the index of the last put that had completed (-1: none).
 */
export async function killDuringPuts(values: Uint8Array[], killAt: number): Promise<{ completed: number; read: string | null; killed: boolean }> {
  const disk = new FileModel();
  disk.dirs.add('/tmp/');
  disk.killAt = killAt;
  const storage = new FileStorage(disk.api(), '/tmp/');
  let completed = -1;
  let killed = false;
  try {
    for (let i = 0; i < values.length; i++) {
      await storage.put('ctr', values[i]);
      completed = i;
    }
  } catch (e) {
    if (!(e instanceof Killed) && !(e as { message?: string }).message?.includes('failed')) throw e;
    killed = true;
  }
  const after = new FileStorage(disk.restart(), '/tmp/');
  const v = await after.get('ctr');
  return { completed, read: v === undefined ? null : toHex(v), killed };
}
