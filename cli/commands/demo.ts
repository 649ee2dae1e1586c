/**
 * `mqsec demo` (what `npm start` runs): the embedded broker, 20 simulated
 * nodes and the verifying backend, with the live view, until Ctrl-C. Prints
 * where the broker listens and an app account to watch it with.
 */
import { wholeNumber, type CommandModule } from '../command.js';
import { MAX_DEVICES, runSimCommand } from './sim.js';

export const demoCommand: CommandModule = {
  name: 'demo',
  register(program, io) {
    program
      .command('demo')
      .description('embedded broker + 20 simulated nodes + verifier with a live view, until Ctrl-C (npm start)')
      .option('--devices <n>', 'number of simulated nodes', wholeNumber('--devices', 1, MAX_DEVICES), 20)
      .option('--port <n>', 'broker port (default 1883, or a free port if taken)', wholeNumber('--port', 0, 65535))
      .option('--console-port <n>', 'operator console port (default 8080, or a free port if taken)', wholeNumber('--console-port', 0, 65535))
      .option('--no-console', 'do not serve the operator console')
      .action(async (o: { devices: number; port?: number; consolePort?: number; console: boolean }) => {
        const port = o.port ?? (await pickPort(1883));
        const consolePort = o.consolePort ?? (await pickPort(8080));
        await runSimCommand(
          {
            devices: o.devices,
            duration: Infinity, // until Ctrl-C
            drop: 0,
            latency: 0,
            clockSkew: 0,
            powerCut: 0,
            attackers: 1,
            sleepMode: 'deep',
            port,
            logLevel: 'silent',
          },
          io,
          {
            rate: o.devices * 2 / 5,
            console: o.console ? { port: consolePort } : undefined,
            onStarted: (info) => {
              io.out(`mqsec demo: broker on mqtt://${info.host}:${info.port} (data in ${info.dataDir})`);
              if (info.console) {
                io.out(`operator console: ${info.console.url}`);
                if (info.console.admin) io.out(`  log in as ${info.console.admin.name} with password ${info.console.admin.password} (shown once)`);
              }
              io.out(`watch the decrypted readings as the backend sees them:`);
              io.out(`  mosquitto_sub -h ${info.host} -p ${info.port} -u ${info.appUser} -P '${info.appPassword}' -t 'sensors/#' -v`);
              io.out(`  npx mqtt sub -h ${info.host} -p ${info.port} -u ${info.appUser} -P '${info.appPassword}' -t 'sensors/#' -v`);
              io.out(`or send a command to a node (sealed for it by the broker; a node hears it while awake, right after a reading):`);
              io.out(`  mosquitto_pub -h ${info.host} -p ${info.port} -u ${info.appUser} -P '${info.appPassword}' -t cmd/node-0001/interval -m 10`);
              io.out('Ctrl-C stops the demo and prints a summary.');
              io.out('');
            },
          },
        );
      });
  },
};

async function pickPort(preferred: number): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(0));
    s.listen(preferred, '127.0.0.1', () => s.close(() => resolve(preferred)));
  });
}
