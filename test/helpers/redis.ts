/**
 * A real redis-server (Debian package) for cluster tests, on a free loopback
 * port, in a fresh temp directory, stopped by its PID:
 *
 *   const r = await startRedis();
 *   ... r.url (redis://127.0.0.1:PORT) ...
 *   await r.pause();   // SIGKILL: the port refuses connections (an outage)
 *   await r.resume();  // same port, same data (append-only file)
 *   await r.stop();    // stops it and removes the directory
 *
 * The append-only file is on (`appendfsync always`), so what Redis acknowledged
 * before a kill is there after `resume()`, as with a durable deployment.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, waitForPort } from './brokers.js';

export const REDIS_BIN = '/usr/bin/redis-server';

export function hasRedis(): boolean {
  return existsSync(REDIS_BIN);
}

export interface RunningRedis {
  port: number;
  url: string;
  dir: string;
  pid(): number | undefined;
  /** Kills the server (SIGKILL) and waits until it is gone: clients see an outage. */
  pause(): Promise<void>;
  /** Starts it again on the same port with the same data. */
  resume(): Promise<void>;
  stop(): Promise<void>;
}

export async function startRedis(): Promise<RunningRedis> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-redis-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const launch = async () => {
    const c = spawn(
      REDIS_BIN,
      ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--protected-mode', 'yes', '--loglevel', 'warning'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let alive = true;
    let err = '';
    c.stderr!.on('data', (d) => (err += d));
    exited = new Promise<void>((r) => c.once('exit', () => ((alive = false), r())));
    child = c;
    try {
      await waitForPort(port, 10_000, () => alive);
    } catch (e) {
      throw new Error(`redis-server did not start: ${(e as Error).message} ${err}`);
    }
  };
  const kill = async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    child = undefined;
  };
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    pid: () => child?.pid,
    pause: kill,
    resume: launch,
    async stop() {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
