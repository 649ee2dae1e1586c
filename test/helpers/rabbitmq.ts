/**
 * Debian's RabbitMQ 3.10 with its MQTT plugin and the HTTP auth backend, for
 * the stock-broker tests (docs/protocol.md §15.9): its own node name, data,
 * log and config in a temp dir, its own ports (AMQP, MQTT, Erlang
 * distribution) and its own epmd on a free port (started here, so it is ours
 * to stop), plugins from an enabled_plugins file. Slow to start (seconds):
 * once per test file. Stopped by PID (SIGTERM, then SIGKILL), epmd too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, waitForPort } from './brokers.js';

export const RABBITMQ_SERVER = '/usr/lib/rabbitmq/bin/rabbitmq-server';
const EPMD_CANDIDATES = ['/usr/bin/epmd', '/usr/lib/erlang/bin/epmd'];

export function hasRabbitmq(): boolean {
  return existsSync(RABBITMQ_SERVER) && EPMD_CANDIDATES.some((p) => existsSync(p));
}

export interface RabbitHttpAuth {
  /** Base URL of the HTTP auth service, e.g. http://127.0.0.1:PORT/auth (paths /user, /vhost, /resource, /topic). */
  baseUrl: string;
  /**
   * Port of the management plugin's HTTP API (rabbitmq_management), through
   * which the key service closes a revoked principal's live connections
   * (§15.9). Its login is the key service's own, which the key service tags
   * `administrator` in its /user answer.
   */
  managementPort?: number;
}

/** enabled_plugins of such a RabbitMQ (README, "Use your existing broker"). */
export function rabbitPlugins(management: boolean): string {
  return `[rabbitmq_mqtt,rabbitmq_auth_backend_http${management ? ',rabbitmq_management' : ''}].`;
}

/** rabbitmq.conf of a RabbitMQ whose MQTT clients are checked by an mqsec key service over HTTP (README, "Use your existing broker"). */
export function rabbitConfigLines(mqttPort: number, auth: RabbitHttpAuth): string[] {
  return [
    'mqtt.listeners.tcp.default = 127.0.0.1:' + mqttPort,
    'mqtt.allow_anonymous = false',
    'mqtt.vhost = /',
    'mqtt.exchange = amq.topic',
    // every user, vhost, resource and topic check goes to the key service
    'auth_backends.1 = http',
    'auth_http.http_method = post',
    `auth_http.user_path = ${auth.baseUrl}/user`,
    `auth_http.vhost_path = ${auth.baseUrl}/vhost`,
    `auth_http.resource_path = ${auth.baseUrl}/resource`,
    `auth_http.topic_path = ${auth.baseUrl}/topic`,
    // the management API on loopback only: the key service closes revoked principals' connections through it
    ...(auth.managementPort !== undefined ? ['management.tcp.ip = 127.0.0.1', `management.tcp.port = ${auth.managementPort}`] : []),
  ];
}

export interface RunningRabbitmq {
  mqttPort: number;
  url: string;
  /** http://127.0.0.1:PORT of the management API, when started with it. */
  managementUrl?: string;
  readonly pid: number;
  /** PID of the Erlang VM (beam) itself, from the node's pid file: where the broker's CPU time is. */
  beamPid(): Promise<number>;
  dir: string;
  /** Everything the node printed (its log goes to the console). */
  log: string[];
  /** Stops the node cleanly (durable queues, persistent messages and sessions are kept on disk) and starts it again on the same ports. */
  restart(): Promise<void>;
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

async function stopChild(child: ChildProcess | undefined, graceMs: number): Promise<void> {
  if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  process.kill(child.pid, 'SIGTERM');
  if (!(await waitExit(child, graceMs))) {
    process.kill(child.pid, 'SIGKILL');
    await waitExit(child, 3000);
  }
}

export async function startRabbitmq(authIn: RabbitHttpAuth, opts: { startTimeoutMs?: number; management?: boolean } = {}): Promise<RunningRabbitmq> {
  if (!hasRabbitmq()) throw new Error('rabbitmq-server not installed (apt-get install rabbitmq-server)');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-rabbit-'));
  const [mqttPort, amqpPort, distPort, epmdPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const auth: RabbitHttpAuth = opts.management ? { ...authIn, managementPort: await freePort() } : authIn;
  const conf = path.join(dir, 'rabbitmq.conf');
  await writeFile(conf, [`listeners.tcp.default = 127.0.0.1:${amqpPort}`, 'log.console = true', 'log.console.level = info', 'log.file = false', ...rabbitConfigLines(mqttPort, auth), ''].join('\n'));
  await writeFile(path.join(dir, 'enabled_plugins'), rabbitPlugins(auth.managementPort !== undefined) + '\n');
  await mkdir(path.join(dir, 'mnesia'));
  await mkdir(path.join(dir, 'log'));
  const node = `mqsec${process.pid}x${mqttPort}@localhost`;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dir, // the Erlang cookie is written here, not in the user's home
    LANG: 'C.UTF-8',
    ERL_EPMD_PORT: String(epmdPort),
    ERL_EPMD_ADDRESS: '127.0.0.1',
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(amqpPort),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: path.join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: path.join(dir, 'log'),
    RABBITMQ_CONFIG_FILE: conf,
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, 'enabled_plugins'),
    RABBITMQ_PID_FILE: path.join(dir, 'rabbit.pid'),
    RABBITMQ_LOGS: '-',
  };
  const log: string[] = [];
  const collect = (b: Buffer) => {
    for (const line of b.toString().split('\n')) if (line) log.push(line);
    if (log.length > 2000) log.splice(0, log.length - 2000);
  };
  // our own epmd, in the foreground, so its PID is ours to stop
  const epmdBin = EPMD_CANDIDATES.find((p) => existsSync(p))!;
  const epmd = spawn(epmdBin, ['-port', String(epmdPort), '-address', '127.0.0.1'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  epmd.on('error', () => {});
  epmd.stderr?.on('data', collect);
  let server: ChildProcess | undefined;
  const cleanup = async () => {
    await stopChild(server, 15_000);
    await stopChild(epmd, 3000);
    await rm(dir, { recursive: true, force: true });
  };
  const startServer = async () => {
    const s = spawn(RABBITMQ_SERVER, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    server = s;
    s.on('error', () => {});
    s.stdout?.on('data', collect);
    s.stderr?.on('data', collect);
    await waitForPort(mqttPort, opts.startTimeoutMs ?? 90_000, () => s.exitCode === null && s.signalCode === null);
    if (auth.managementPort !== undefined) await waitForPort(auth.managementPort, opts.startTimeoutMs ?? 90_000, () => s.exitCode === null && s.signalCode === null);
  };
  try {
    await waitForPort(epmdPort, 10_000, () => epmd.exitCode === null);
    await startServer();
  } catch (e) {
    await cleanup();
    throw new Error(`${(e as Error).message}\n${log.slice(-30).join('\n')}`);
  }
  return {
    mqttPort,
    url: `mqtt://127.0.0.1:${mqttPort}`,
    managementUrl: auth.managementPort !== undefined ? `http://127.0.0.1:${auth.managementPort}` : undefined,
    get pid() {
      return server?.pid ?? -1;
    },
    beamPid: async () => Number((await readFile(env.RABBITMQ_PID_FILE!, 'utf8')).trim()),
    dir,
    log,
    restart: async () => {
      await stopChild(server, 30_000);
      await startServer();
    },
    stop: cleanup,
  };
}
