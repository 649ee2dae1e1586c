/**
 * Real brokers for integration tests, on free loopback ports:
 *
 *   const m = await startMosquitto();          // Debian /usr/sbin/mosquitto
 *   const a = await startAedes();              // in-process Aedes 1.2
 *   ... connect to 127.0.0.1:m.port / a.port ...
 *   await m.stop(); await a.stop();
 *
 * Both resolve only once the port accepts TCP connections. Mosquitto runs
 * from a generated config in a fresh temp directory, is stopped by its PID
 * (SIGTERM, then SIGKILL if it lingers), and the directory is removed.
 * Either can be stopped and started again on the same port (`restart()`),
 * which is how tests simulate a broker crash.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Aedes, type AedesOptions } from 'aedes';

export const MOSQUITTO_BIN = '/usr/sbin/mosquitto';

/** True when the Debian mosquitto binary is installed. */
export function hasMosquitto(): boolean {
  return existsSync(MOSQUITTO_BIN);
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once 127.0.0.1:port accepts a TCP connection; rejects after timeoutMs. */
export async function waitForPort(port: number, timeoutMs = 10_000, isAlive: () => boolean = () => true): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (!isAlive()) throw new Error(`process serving port ${port} exited`);
    if (Date.now() > deadline) throw new Error(`port ${port} did not open within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface MosquittoOptions {
  /** Port to listen on; a free one by default. */
  port?: number;
  /** Extra lines appended to the generated mosquitto.conf. */
  extraConfig?: string[];
  /** Default true. */
  allowAnonymous?: boolean;
  /** Collect broker log lines (stderr/stdout) here. */
  onLog?: (line: string) => void;
}

export interface RunningMosquitto {
  port: number;
  /** PID of the current process (changes after restart). */
  readonly pid: number;
  /** Directory with mosquitto.conf; removed by stop(). */
  dir: string;
  /** Kills the process (SIGKILL: like a crash; SIGTERM: a clean shutdown, which saves a persistent store) and starts it again on the same port. */
  restart(signal?: 'SIGKILL' | 'SIGTERM'): Promise<void>;
  /** Kills the process only, leaving the port closed until start(). */
  kill(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

async function killChild(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  process.kill(child.pid, signal);
  if (!(await waitExit(child, 3000))) {
    process.kill(child.pid, 'SIGKILL');
    await waitExit(child, 3000);
  }
}

export async function startMosquitto(options: MosquittoOptions = {}): Promise<RunningMosquitto> {
  if (!hasMosquitto()) throw new Error(`${MOSQUITTO_BIN} not found (apt-get install mosquitto)`);
  const port = options.port ?? (await freePort());
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-mosquitto-'));
  const conf = path.join(dir, 'mosquitto.conf');
  await writeFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      `allow_anonymous ${options.allowAnonymous === false ? 'false' : 'true'}`,
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      ...(options.extraConfig ?? []),
      '',
    ].join('\n'),
  );
  let child: ChildProcess | undefined;

  async function start(): Promise<void> {
    const c = spawn(MOSQUITTO_BIN, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    const log = (b: Buffer) => {
      for (const line of b.toString().split('\n')) if (line) options.onLog?.(line);
    };
    c.stdout?.on('data', log);
    c.stderr?.on('data', log);
    c.on('error', () => {});
    await waitForPort(port, 10_000, () => c.exitCode === null && c.signalCode === null);
  }

  try {
    await start();
  } catch (e) {
    await killChild(child, 'SIGKILL');
    await rm(dir, { recursive: true, force: true });
    throw e;
  }

  return {
    port,
    dir,
    get pid() {
      return child?.pid ?? -1;
    },
    async kill() {
      await killChild(child, 'SIGKILL');
    },
    start,
    async restart(signal: 'SIGKILL' | 'SIGTERM' = 'SIGKILL') {
      await killChild(child, signal);
      await start();
    },
    async stop() {
      await killChild(child, 'SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface AedesBrokerOptions {
  port?: number;
  /** Passed to Aedes.createBroker (hooks such as authenticate, authorizePublish, ...). */
  aedes?: AedesOptions;
  /** Called with each new Aedes instance (also after restart), to attach listeners. */
  setup?: (aedes: Aedes) => void;
}

export interface RunningAedes {
  port: number;
  /** The current Aedes instance (a new one after restart). */
  readonly aedes: Aedes;
  /** Stops accepting, destroys every client connection and closes Aedes. */
  kill(): Promise<void>;
  start(): Promise<void>;
  /** kill() + start() on the same port: a broker crash without persistence. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startAedes(options: AedesBrokerOptions = {}): Promise<RunningAedes> {
  const port = options.port ?? (await freePort());
  let aedes: Aedes | undefined;
  let server: net.Server | undefined;
  let sockets = new Set<net.Socket>();

  async function start(): Promise<void> {
    const a = await Aedes.createBroker(options.aedes);
    options.setup?.(a);
    const s = net.createServer((socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      a.handle(socket);
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => resolve());
    });
    aedes = a;
    server = s;
  }

  async function kill(): Promise<void> {
    const s = server;
    const a = aedes;
    server = undefined;
    if (s) {
      const closed = new Promise<void>((resolve) => s.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      sockets = new Set();
      await closed;
    }
    if (a && !a.closed) await new Promise<void>((resolve) => a.close(() => resolve()));
  }

  await start();
  await waitForPort(port);
  return {
    port,
    get aedes() {
      if (!aedes) throw new Error('aedes is not running');
      return aedes;
    },
    kill,
    start,
    async restart() {
      await kill();
      await start();
    },
    stop: kill,
  };
}
