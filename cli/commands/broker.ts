/** `mqsec broker`: runs the security-enhanced broker in the foreground. */
import { pino } from 'pino';
import { addressMatcher, CLUSTER_NEEDS_EXTERNAL_KEY_SERVICE, startBroker, type RunningBroker } from '../../broker/server.js';
import { ensureAdminAccount } from '../../broker/console/admin.js';
import { DEFAULT_LIMITS } from '../../broker/limits/config.js';
import { CliError, DEFAULT_DATA_DIR, parsePort, wholeNumber, type CliIo, type CommandModule } from '../command.js';
import type { ConsoleOptions } from '../../broker/console/server.js';
import type { Registry } from '../../broker/registry/store.js';
import { parseRedisUrl } from '../../broker/cluster/redis-state.js';
import { DB_OPTION_HELP, registryCliError } from './shared.js';
import { applyConfigFile } from '../config-file.js';

/** Options of `mqsec broker` that name files or directories: relative ones in a config file are taken from its directory. */
const BROKER_PATH_OPTIONS = ['data', 'tls-cert', 'tls-key', 'console-cert', 'console-key'];

export interface ConsoleCliOptions {
  consolePort?: string;
  consoleHost?: string;
  consoleCert?: string;
  consoleKey?: string;
  consoleTls?: boolean;
}

/** The console's options from the command line (undefined: not served). */
export function consoleOptionsFrom(o: ConsoleCliOptions): ConsoleOptions | undefined {
  if (o.consolePort === undefined) return undefined;
  if ((o.consoleCert === undefined) !== (o.consoleKey === undefined)) throw new CliError('--console-cert and --console-key go together');
  return {
    port: parsePort(o.consolePort),
    host: o.consoleHost,
    tls: o.consoleCert ? { certFile: o.consoleCert, keyFile: o.consoleKey! } : o.consoleTls ? 'generate' : undefined,
  };
}

/** Prints where the console is and, if the registry had no admin yet, the one-time admin login it created. */
export async function announceConsole(io: CliIo, registry: Registry, console: { url: string; certFile?: string }): Promise<void> {
  io.out(`operator console on ${console.url}`);
  if (console.certFile) io.out(`  (HTTPS certificate: ${console.certFile}; trust it in the browser once)`);
  const admin = await ensureAdminAccount(registry);
  if (admin) io.out(`  admin login (shown once): ${admin.name} / ${admin.password}`);
}

export const brokerCommand: CommandModule = {
  name: 'broker',
  register(program, io) {
    program
      .command('broker')
      .description('run the mqsec broker (Aedes) in the foreground; stops cleanly on SIGINT/SIGTERM; exits non-zero if it cannot start')
      .option('--config <file>', 'JSON file of these options by flag name ({"port": 1883, "db": {"env": "MQSEC_DB"}, ...}); flags given here win; secrets as {"env": NAME} or {"file": PATH} (docs/operations.md "Configuration file")')
      .hook('preAction', (cmd) => applyConfigFile(cmd, { paths: BROKER_PATH_OPTIONS }))
      .option('--data <dir>', 'data directory (created on first start)', DEFAULT_DATA_DIR)
      .option('--db <url>', DB_OPTION_HELP)
      .option('--port <n>', 'MQTT port (0 = any free port)', '1883')
      .option('--host <addr>', 'address to listen on', '127.0.0.1')
      .option('--metrics-port <n>', 'serve Prometheus metrics on this port')
      .option('--log-level <level>', 'pino log level (logs go to stderr)', 'info')
      .option('--console-port <n>', 'serve the operator console on this port (0 = any free port)')
      .option('--console-host <addr>', 'console listen address (default: --host); plain HTTP only on loopback')
      .option('--console-cert <file>', 'console HTTPS certificate (PEM)')
      .option('--console-key <file>', 'console HTTPS private key (PEM)')
      .option('--console-tls', 'console over HTTPS even on loopback (certificate generated at first start if none given)')
      .option('--tls-port <n>', 'also listen for MQTT over TLS on this port (0 = any free port); accounts off loopback need it')
      .option('--tls-host <addr>', 'address of the TLS listener (default: --host)')
      .option('--tls-cert <file>', 'PEM certificate for the TLS listener (default: generated at first start into <data>/tls/cert.pem)')
      .option('--tls-key <file>', 'PEM private key for --tls-cert (mode 0600)')
      .option('--tls-name <names>', 'extra DNS names / IP addresses for a generated certificate (comma-separated)')
      .option('--allow-plain-accounts', 'accept account (password) logins over plain TCP from any address (passwords then cross the network in clear)')
      .option('--local-addresses <cidrs>', 'address blocks whose password logins over plain TCP are accepted (comma-separated)', '127.0.0.0/8,::1/128')
      .option('--keyservice <where>', 'key service of end-to-end topics: embedded (in this process) or external (`mqsec keyservice` logs in as an account of role keyservice)', 'embedded')
      .option('--use-username-as-clientid', "accounts always connect under their own name as client id (as Mosquitto's option)")
      .option('--cluster <redis-url>', 'run as one node of several: routing, subscriptions, retained messages, QoS 1 queues and grace state in this Redis (redis://HOST:PORT[/DB]); every node uses the same --data registry')
      .option('--node-id <id>', 'this node\'s name in the cluster (metrics label, mqsec status; default HOST:PORT)')
      .option('--retained-per-account <n>', 'retained messages one account or device may store', wholeNumber('--retained-per-account', 0), DEFAULT_LIMITS.retainedPerAccount)
      .option('--retained-bytes-per-account <n>', 'bytes (topic + payload) of retained messages one account or device may store', wholeNumber('--retained-bytes-per-account', 0), DEFAULT_LIMITS.retainedBytesPerAccount)
      .option('--retained-total <n>', 'retained messages in the whole broker', wholeNumber('--retained-total', 0), DEFAULT_LIMITS.retainedTotal)
      .option('--retained-bytes-total <n>', 'bytes (topic + payload) of all retained messages in the broker', wholeNumber('--retained-bytes-total', 0), DEFAULT_LIMITS.retainedBytesTotal)
      .action(async (o: {
        data: string; db?: string; port: string; host: string; metricsPort?: string; logLevel: string;
        tlsPort?: string; tlsHost?: string; tlsCert?: string; tlsKey?: string; tlsName?: string;
        allowPlainAccounts?: boolean; localAddresses: string; useUsernameAsClientid?: boolean; keyservice: string;
        retainedPerAccount: number; retainedBytesPerAccount: number; retainedTotal: number; retainedBytesTotal: number;
        cluster?: string; nodeId?: string;
      } & ConsoleCliOptions) => {
        if (o.nodeId !== undefined && o.cluster === undefined) throw new CliError('--node-id needs --cluster');
        if (o.nodeId !== undefined && !/^[A-Za-z0-9._:-]{1,64}$/.test(o.nodeId)) throw new CliError('--node-id: 1-64 characters of A-Z a-z 0-9 . _ : -');
        const port = parsePort(o.port);
        if (o.keyservice !== 'embedded' && o.keyservice !== 'external') throw new CliError('--keyservice is embedded or external');
        if (o.cluster !== undefined && o.keyservice !== 'external') throw new CliError(CLUSTER_NEEDS_EXTERNAL_KEY_SERVICE);
        const metricsPort = o.metricsPort === undefined ? undefined : parsePort(o.metricsPort);
        const consoleOptions = consoleOptionsFrom(o);
        if ((o.tlsCert || o.tlsKey || o.tlsName || o.tlsHost) && o.tlsPort === undefined) throw new CliError('--tls-cert, --tls-key, --tls-name and --tls-host need --tls-port');
        if (Boolean(o.tlsCert) !== Boolean(o.tlsKey)) throw new CliError('give both --tls-cert and --tls-key (or neither, to generate a certificate)');
        const tls = o.tlsPort === undefined ? undefined : {
          port: parsePort(o.tlsPort),
          host: o.tlsHost,
          certFile: o.tlsCert,
          keyFile: o.tlsKey,
          altNames: o.tlsName?.split(',').map((n) => n.trim()).filter(Boolean),
        };
        const localAddresses = o.localAddresses.split(',').map((n) => n.trim()).filter(Boolean);
        try {
          addressMatcher(localAddresses);
        } catch (e) {
          throw new CliError((e as Error).message);
        }
        const security = { tls, allowPlainAccounts: o.allowPlainAccounts === true, localAddresses, useUsernameAsClientId: o.useUsernameAsClientid === true };
        const logger = pino({ level: o.logLevel, base: { svc: 'mqsec-broker' } }, pino.destination(2));
        // Signals are handled from before the start: a Ctrl-C while the broker is still
        // opening stops it as soon as it is open (lock released), and a second Ctrl-C
        // while it drains does not kill it half-stopped (the drain is bounded).
        let stopSignal: string | undefined;
        let wake: () => void = () => {};
        const stopRequested = new Promise<void>((r) => (wake = r));
        const onSignal = (signal: string) => {
          if (stopSignal) {
            logger.warn({ signal }, 'already stopping (the drain takes a few seconds at most)');
            return;
          }
          stopSignal = signal;
          wake();
        };
        const onInt = () => onSignal('SIGINT');
        const onTerm = () => onSignal('SIGTERM');
        process.on('SIGINT', onInt);
        process.on('SIGTERM', onTerm);
        try {
          let broker: RunningBroker;
          try {
            const limits = {
              retainedPerAccount: o.retainedPerAccount,
              retainedBytesPerAccount: o.retainedBytesPerAccount,
              retainedTotal: o.retainedTotal,
              retainedBytesTotal: o.retainedBytesTotal,
            };
            const cluster = o.cluster === undefined ? undefined : { url: o.cluster, nodeId: o.nodeId ?? `${o.host}:${port}` };
            if (cluster) {
              try {
                parseRedisUrl(cluster.url);
              } catch (e) {
                throw new CliError((e as Error).message);
              }
            }
            broker = await startBroker({ dataDir: o.data, db: o.db, port, host: o.host, metricsPort, logger, console: consoleOptions, limits, keyService: o.keyservice, cluster, ...security }).catch((e: unknown) => {
              throw registryCliError(e);
            });
          } finally {
            logger.flush();
          }
          if (!stopSignal) {
            io.out(`mqsec broker listening on mqtt://${broker.host}:${broker.port}`);
            if (broker.context.cluster) io.out(`cluster node ${broker.context.cluster.state.nodeId} (pid ${process.pid}) over ${o.cluster}`);
            if (broker.tls) io.out(`TLS on mqtts://${broker.tls.host}:${broker.tls.port} (certificate ${broker.tls.certPath}, SHA-256 ${broker.tls.fingerprint})`);
            if (broker.metricsPort !== undefined) io.out(`metrics on http://${broker.host}:${broker.metricsPort}/metrics`);
            if (o.keyservice === 'external') io.out('key service: external (waiting for `mqsec keyservice` to log in as an account of role keyservice)');
            if (broker.console) await announceConsole(io, broker.registry, broker.console);
          }
          await stopRequested;
          logger.info({ signal: stopSignal }, 'shutting down');
          await broker.stop();
          io.out('mqsec broker stopped');
        } finally {
          // after a signal the handlers stay: one more Ctrl-C while the process winds down
          // must not turn a clean exit into a kill
          if (!stopSignal) {
            process.off('SIGINT', onInt);
            process.off('SIGTERM', onTerm);
          }
        }
      });
  },
};
