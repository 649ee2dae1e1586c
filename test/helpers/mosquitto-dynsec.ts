/**
 * Debian's Mosquitto 2.0 with its own dynamic-security plugin, for the
 * stock-broker tests (docs/protocol.md §15): a fresh temp dir, the plugin's
 * JSON made by `mosquitto_ctrl dynsec init`, the broker log published on
 * `$SYS/broker/log/#` (how the key service learns of connections, §15.4),
 * a free loopback port, stopped by PID.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { hasMosquitto, startMosquitto, type RunningMosquitto } from './brokers.js';

const run = promisify(execFile);

/** Where Debian puts the plugin (multiarch), or undefined. */
export function dynsecPlugin(): string | undefined {
  const candidates = [
    `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/mosquitto_dynamic_security.so`,
    '/usr/lib/mosquitto_dynamic_security.so',
    '/usr/local/lib/mosquitto_dynamic_security.so',
  ];
  return candidates.find((p) => existsSync(p));
}

export function hasMosquittoDynsec(): boolean {
  return hasMosquitto() && dynsecPlugin() !== undefined && existsSync('/usr/bin/mosquitto_ctrl');
}

export interface RunningDynsecMosquitto extends RunningMosquitto {
  adminUser: string;
  adminPassword: string;
  url: string;
  /** The plugin's JSON file (rewritten by the broker on every change). */
  configFile: string;
  /** The JSON as it is now. */
  readConfig(): Promise<unknown>;
}

/** The mosquitto.conf lines of a dynamic-security broker beside an mqsec key service (README, "Use your existing broker"). */
export function dynsecConfigLines(plugin: string, configFile: string, logTopic = true): string[] {
  return [
    'per_listener_settings false',
    `plugin ${plugin}`,
    `plugin_opt_config_file ${configFile}`,
    // the key service learns of connects and disconnects from the broker's log (§15.4)
    ...(logTopic ? ['log_dest topic', 'log_type notice', 'log_type subscribe'] : []),
  ];
}

/**
 * `logTopic: false`: a broker configured without its log on `$SYS/broker/log` (the key service must refuse it).
 * `persistent`: sessions and queued QoS 1 messages are saved in the temp dir
 * at a clean shutdown (`restart('SIGTERM')`) and loaded at start, as a
 * production broker is set up (the default here is Mosquitto's own: none).
 */
export async function startDynsecMosquitto(opts: { onLog?: (line: string) => void; logTopic?: boolean; persistent?: boolean } = {}): Promise<RunningDynsecMosquitto> {
  const plugin = dynsecPlugin();
  if (!plugin || !hasMosquitto()) throw new Error('mosquitto with mosquitto_dynamic_security.so is not installed (apt-get install mosquitto)');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-dynsec-'));
  const configFile = path.join(dir, 'dynamic-security.json');
  const adminUser = 'mqsec-admin';
  const adminPassword = Buffer.from(crypto.getRandomValues(new Uint8Array(18))).toString('base64url');
  await run('/usr/bin/mosquitto_ctrl', ['dynsec', 'init', configFile, adminUser, adminPassword]);
  let broker: RunningMosquitto;
  try {
    broker = await startMosquitto({
      allowAnonymous: false,
      // mosquitto started as root drops to the "mosquitto" user, which could not rewrite the JSON in our temp dir
      extraConfig: [`user ${os.userInfo().username}`, ...dynsecConfigLines(plugin, configFile, opts.logTopic ?? true), ...(opts.persistent ? ['persistence true', `persistence_location ${dir}/`] : [])],
      onLog: opts.onLog,
    });
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  const stopBroker = broker.stop.bind(broker);
  return Object.assign(broker, {
    adminUser,
    adminPassword,
    url: `mqtt://127.0.0.1:${broker.port}`,
    configFile,
    // the plugin rewrites the file in place on every change: a read may catch it half written
    readConfig: async () => {
      for (let i = 0; ; i++) {
        try {
          return JSON.parse(await readFile(configFile, 'utf8'));
        } catch (e) {
          if (i >= 50) throw e;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    },
    stop: async () => {
      await stopBroker();
      await rm(dir, { recursive: true, force: true });
    },
  });
}
