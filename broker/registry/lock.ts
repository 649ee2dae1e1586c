/**
 * One broker per data directory: an exclusive lock file holding the owner's
 * pid. A lock whose pid is no longer alive is stale and taken over. Admin
 * commands (device add/revoke...) do not take the lock: they write to SQLite
 * while the broker runs, and the broker notices (see registry revision).
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const LOCK_FILE = 'broker.lock';

export class DataDirInUseError extends Error {
  constructor(dir: string, pid: number) {
    super(`data directory ${dir} is in use by another broker (pid ${pid})`);
    this.name = 'DataDirInUseError';
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface DirLock {
  release(): void;
}

/** `file`: a cluster node sharing the directory's SQLite registry with other nodes on one host locks its own name (broker-<node>.lock). */
export function acquireDirLock(dir: string, file = LOCK_FILE): DirLock {
  const path = join(dir, file);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      let released = false;
      return {
        release() {
          if (released) return;
          released = true;
          try {
            unlinkSync(path);
          } catch {
            /* already gone */
          }
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let pid = NaN;
      try {
        pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
      } catch {
        /* vanished meanwhile: retry */
      }
      if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) throw new DataDirInUseError(dir, pid);
      try {
        unlinkSync(path); // stale
      } catch {
        /* raced with another remover */
      }
    }
  }
  throw new DataDirInUseError(dir, NaN);
}
