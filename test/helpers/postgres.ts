/**
 * A real PostgreSQL server for one test file (Debian's postgresql 15):
 *
 *   const pg = await startPostgres();       // initdb into a temp dir, start on a free port
 *   const url = await pg.createDatabase();  // postgres://mqsec@127.0.0.1:<port>/<fresh db>
 *   await pg.pause(); ... await pg.resume(); // the server gone for a while, same port and data
 *   await pg.stop();                         // stopped by its PID, temp dir removed
 *
 * The cluster lives in a fresh temp directory (data directory and the unix
 * socket directory both inside it), listens on 127.0.0.1 only, trusts local
 * connections (loopback, test only) and runs without fsync: a test never
 * outlives the machine, and a clean stop writes everything out anyway.
 * PostgreSQL refuses to run as root, so under root the server runs as the
 * `postgres` system user (runuser) in a directory that user owns. It is
 * stopped by the postmaster's PID (from postmaster.pid, since runuser may stay
 * in between): SIGINT (fast shutdown), then SIGKILL if it lingers.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './brokers.js';

export const POSTGRES_BIN_DIR = process.env.MQSEC_PG_BIN ?? '/usr/lib/postgresql/15/bin';
const SUPERUSER = 'mqsec';

/** True when the PostgreSQL server binaries are installed. */
export function hasPostgres(): boolean {
  return existsSync(path.join(POSTGRES_BIN_DIR, 'postgres')) && existsSync(path.join(POSTGRES_BIN_DIR, 'initdb'));
}

export interface RunningPostgres {
  host: string;
  port: number;
  /** The temp directory holding the data directory and the unix socket. */
  dir: string;
  /** postgres://mqsec@127.0.0.1:<port>/postgres (the maintenance database). */
  adminUrl: string;
  /** The postmaster's PID while running. */
  pid(): number | undefined;
  /** Creates a fresh, empty database and returns its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Stops the server (fast shutdown) but keeps its data: clients see it gone. */
  pause(): Promise<void>;
  /** Starts it again on the same port with the same data. */
  resume(): Promise<void>;
  /** Stops the server by PID and removes the temp directory. */
  stop(): Promise<void>;
}

/** The uid/gid to run PostgreSQL as: ourselves, or the `postgres` user when we are root. */
function serverUser(): { uid: number; gid: number; name?: string } {
  const uid = process.getuid?.() ?? 0;
  if (uid !== 0) return { uid, gid: process.getgid?.() ?? 0 };
  const u = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const g = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: u, gid: g, name: 'postgres' };
}

function asServerUser(user: { name?: string }, bin: string, args: string[]): { cmd: string; args: string[] } {
  const full = path.join(POSTGRES_BIN_DIR, bin);
  return user.name ? { cmd: 'runuser', args: ['-u', user.name, '--', full, ...args] } : { cmd: full, args };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startPostgres(): Promise<RunningPostgres> {
  if (!hasPostgres()) throw new Error(`PostgreSQL server binaries not found in ${POSTGRES_BIN_DIR} (Debian package postgresql)`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-pg-'));
  const user = serverUser();
  chownSync(dir, user.uid, user.gid);
  const dataDir = path.join(dir, 'data');
  const init = asServerUser(user, 'initdb', ['-D', dataDir, '-U', SUPERUSER, '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
  try {
    execFileSync(init.cmd, init.args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir });
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${(e as { stderr?: Buffer }).stderr?.toString() ?? e}`);
  }
  const host = '127.0.0.1';
  const port = await freePort();
  const adminUrl = `postgres://${SUPERUSER}@${host}:${port}/postgres`;
  let child: ChildProcess | undefined;
  let postmaster: number | undefined;
  let log = '';

  const start = async () => {
    const cmd = asServerUser(user, 'postgres', [
      '-D', dataDir,
      '-p', String(port),
      '-k', dir,
      '-c', `listen_addresses=${host}`,
      '-c', 'fsync=off',
      '-c', 'full_page_writes=off',
      '-c', 'max_connections=100',
      '-c', 'shared_buffers=16MB',
    ]);
    log = '';
    child = spawn(cmd.cmd, cmd.args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d: Buffer) => {
      if (log.length < 20_000) log += d.toString();
    });
    const exited = new Promise<number | null>((r) => child!.once('exit', (code) => r(code)));
    const deadline = Date.now() + 30_000;
    for (;;) {
      const gone = await Promise.race([exited, sleep(100).then(() => 'running' as const)]);
      if (gone !== 'running') throw new Error(`postgres exited (${gone}) before accepting connections:\n${log}`);
      const pidFile = path.join(dataDir, 'postmaster.pid');
      if (existsSync(pidFile)) {
        const c = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 1000 });
        try {
          await c.connect();
          await c.query('SELECT 1');
          await c.end();
          postmaster = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
          return;
        } catch {
          await c.end().catch(() => {});
        }
      }
      if (Date.now() > deadline) throw new Error(`postgres did not accept connections within 30 s:\n${log}`);
    }
  };

  const halt = async () => {
    const pid = postmaster;
    postmaster = undefined;
    if (pid === undefined) return;
    try {
      process.kill(pid, 'SIGINT'); // fast shutdown: disconnects clients, writes a checkpoint
    } catch {
      /* already gone */
    }
    const deadline = Date.now() + 10_000;
    while (alive(pid) && Date.now() < deadline) await sleep(50);
    if (alive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
      while (alive(pid)) await sleep(50);
    }
    // runuser (when used) exits once its child did
    if (child && child.exitCode === null && child.signalCode === null) {
      await Promise.race([new Promise((r) => child!.once('exit', r)), sleep(2000)]);
    }
  };

  try {
    await start();
  } catch (e) {
    await halt();
    if (child?.pid && alive(child.pid)) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
    throw e;
  }

  let serial = 0;
  return {
    host,
    port,
    dir,
    adminUrl,
    pid: () => postmaster,
    async createDatabase(name?: string) {
      const db = name ?? `t${process.pid}_${++serial}`;
      if (!/^[a-z_][a-z0-9_]*$/.test(db)) throw new Error(`bad database name ${db}`);
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${db}`);
      } finally {
        await c.end();
      }
      return `postgres://${SUPERUSER}@${host}:${port}/${db}`;
    },
    pause: halt,
    resume: start,
    async stop() {
      await halt();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
