/** `mqsec broker`: runs the security-enhanced broker in the foreground. */
import { pino } from 'pino';
import { startBroker, type RunningBroker } from '../../broker/server.js';
import { ensureAdminAccount } from '../../broker/console/admin.js';
import { CliError, DEFAULT_DATA_DIR, parsePort, type CliIo, type CommandModule } from '../command.js';
import type { ConsoleOptions } from '../../broker/console/server.js';
import type { Registry } from '../../broker/registry/registry.js';

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
      .option('--data <dir>', 'data directory (created on first start)', DEFAULT_DATA_DIR)
      .option('--port <n>', 'MQTT port (0 = any free port)', '1883')
      .option('--host <addr>', 'address to listen on', '127.0.0.1')
      .option('--metrics-port <n>', 'serve Prometheus metrics on this port')
      .option('--log-level <level>', 'pino log level (logs go to stderr)', 'info')
      .option('--console-port <n>', 'serve the operator console on this port (0 = any free port)')
      .option('--console-host <addr>', 'console listen address (default: --host); plain HTTP only on loopback')
      .option('--console-cert <file>', 'console HTTPS certificate (PEM)')
      .option('--console-key <file>', 'console HTTPS private key (PEM)')
      .option('--console-tls', 'console over HTTPS even on loopback (certificate generated at first start if none given)')
      .action(async (o: { data: string; port: string; host: string; metricsPort?: string; logLevel: string } & ConsoleCliOptions) => {
        const port = parsePort(o.port);
        const metricsPort = o.metricsPort === undefined ? undefined : parsePort(o.metricsPort);
        const consoleOptions = consoleOptionsFrom(o);
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
            broker = await startBroker({ dataDir: o.data, port, host: o.host, metricsPort, logger, console: consoleOptions });
          } finally {
            logger.flush();
          }
          if (!stopSignal) {
            io.out(`mqsec broker listening on mqtt://${broker.host}:${broker.port}`);
            if (broker.metricsPort !== undefined) io.out(`metrics on http://${broker.host}:${broker.metricsPort}/metrics`);
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
