/** `mqsec broker`: runs the security-enhanced broker in the foreground. */
import { pino } from 'pino';
import { startBroker, type RunningBroker } from '../../broker/server.js';
import { DEFAULT_DATA_DIR, parsePort, type CommandModule } from '../command.js';

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
      .action(async (o: { data: string; port: string; host: string; metricsPort?: string; logLevel: string }) => {
        const port = parsePort(o.port);
        const metricsPort = o.metricsPort === undefined ? undefined : parsePort(o.metricsPort);
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
            broker = await startBroker({ dataDir: o.data, port, host: o.host, metricsPort, logger });
          } finally {
            logger.flush();
          }
          if (!stopSignal) {
            io.out(`mqsec broker listening on mqtt://${broker.host}:${broker.port}`);
            if (broker.metricsPort !== undefined) io.out(`metrics on http://${broker.host}:${broker.metricsPort}/metrics`);
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
