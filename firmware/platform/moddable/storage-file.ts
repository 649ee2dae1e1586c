/**
 * Module `firmware/platform/moddable/board-storage` on the desktop target
 * (boards/lin): files under the SDK's `config.file.root`, written atomically
 * (file-storage.ts), instead of the SDK's `lin` preference module, whose
 * values live in a JavaScript object (frozen when preloaded) and one JSON file
 * rewritten in place (lost when the process is killed mid-write).
 *
 * `config.mqsec.storagePauseMs` (set by the desktop check's build only): while
 * a file `mqsec-pause-writes` exists in the file root, each write stops
 * half-way for that long after printing `mqsec storage mid-write <key>`, so
 * the check can kill the process inside a write.
 */
import { File, Directory } from 'file';
import config from 'mc/config';
import Time from 'time';
import type { Storage } from '../../core/platform.js';
import { FileStorage, type FileApi } from './file-storage.js';

const files: FileApi = Object.freeze({
  open: (path: string, write: boolean) => new File(path, write),
  exists: (path: string) => File.exists(path),
  delete: (path: string) => File.delete(path),
  rename: (from: string, to: string) => File.rename(from, to),
  createDirectory: (path: string) => Directory.create(path),
});

export function createStorage(): Storage {
  const settings = (config as { mqsec?: { storagePauseMs?: number }; file?: { root?: string } });
  const pauseMs = settings.mqsec?.storagePauseMs ?? 0;
  const root = settings.file?.root ?? '/tmp/';
  const marker = `${root}mqsec-pause-writes`;
  const midWrite =
    pauseMs > 0
      ? (key: string) => {
          if (!File.exists(marker)) return;
          trace(`mqsec storage mid-write ${key}\n`);
          const until = Time.ticks + pauseMs;
          while (Time.ticks < until) {
            // the process is meant to be killed here
          }
        }
      : undefined;
  return new FileStorage(files, root, 'mqsec', midWrite ? { midWrite } : {});
}
