/** `mqsec broker`: runs the security-enhanced broker in the foreground. */
import { pino } from 'pino';
import { startBroker } from '../../broker/server.js';
import { DEFAULT_DATA_DIR, parsePort, type CommandModule } from '../command.js';

export const brokerCommand: CommandModule = {
  name: 'broker',
  register(program, io) {
    program
      .command('broker')
      .description('run the mqsec broker (Aedes) in the foreground; stops cleanly on SIGINT/SIGTERM')
      .option('--data <dir>', 'data directory (created on first start)', DEFAULT_DATA_DIR)
      .option('--port <n>', 'MQTT port (0 = any free port)', '1883')
      .option('--host <addr>', 'address to listen on', '127.0.0.1')
      .option('--metrics-port <n>', 'serve Prometheus metrics on this port')
      .option('--log-level <level>', 'pino log level (logs go to stderr)', 'info')
      .action(async (o: { data: string; port: string; host: string; metricsPort?: string; logLevel: string }) => {
        const logger = pino({ level: o.logLevel, base: { svc: 'mqsec-broker' } }, pino.destination(2));
        const broker = await startBroker({
          dataDir: o.data,
          port: parsePort(o.port),
          host: o.host,
          metricsPort: o.metricsPort === undefined ? undefined : parsePort(o.metricsPort),
          logger,
        });
        io.out(`mqsec broker listening on mqtt://${broker.host}:${broker.port}`);
        if (broker.metricsPort !== undefined) io.out(`metrics on http://${broker.host}:${broker.metricsPort}/metrics`);
        await new Promise<void>((resolve) => {
          const shutdown = (signal: string) => {
            process.off('SIGINT', onInt);
            process.off('SIGTERM', onTerm);
            logger.info({ signal }, 'shutting down');
            broker.stop().then(resolve, resolve);
          };
          const onInt = () => shutdown('SIGINT');
          const onTerm = () => shutdown('SIGTERM');
          process.on('SIGINT', onInt);
          process.on('SIGTERM', onTerm);
        });
        io.out('mqsec broker stopped');
      });
  },
};
