/**
 * `mqsec hil --port /dev/ttyUSB0 [--board esp32]` (npm run hil -- ...):
 * hardware-in-the-loop check of a real board; see tools/hil.ts. Prints
 * "skipped: ..." without a board or an SDK.
 */
import { CliError, parsePort, wholeNumber, type CommandModule } from '../command.js';
import { runHil, type HilOptions } from '../../tools/hil.js';

const BOARDS = ['esp32', 'esp32s3', 'esp32c3'] as const;

export const hilCommand: CommandModule = {
  name: 'hil',
  register(program, io) {
    program
      .command('hil')
      .description('flash a real ESP32 board and check phase 1, sealed readings, phase 2 and revocation (needs MODDABLE, IDF_PATH, a board)')
      .option('--port <tty>', 'serial port of the board', '/dev/ttyUSB0')
      .option('--board <name>', `board: ${BOARDS.join(', ')}`, 'esp32')
      .option('--broker-host <ip>', 'LAN address of this host that the board can reach')
      .option('--broker-port <n>', 'broker port (default: a free port)')
      .option('--ssid <ssid>', 'Wi-Fi network for the board (password from MQSEC_WIFI_PASSWORD)')
      .option('--device-id <id>', 'device id to provision')
      .option('--timeout <ms>', 'limit for each wait', wholeNumber('--timeout', 1000, 3_600_000), 120000)
      .option('--keep', 'keep the temporary build and data directory')
      .option('--verbose', 'show build and serial output')
      .action(async (o: { port: string; board: string; brokerHost?: string; brokerPort?: string; ssid?: string; deviceId?: string; timeout: number; keep?: boolean; verbose?: boolean }) => {
        if (!(BOARDS as readonly string[]).includes(o.board)) throw new CliError(`unknown board "${o.board}" (${BOARDS.join(', ')})`);
        const opts: HilOptions = {
          port: o.port,
          board: o.board as HilOptions['board'],
          brokerHost: o.brokerHost,
          brokerPort: o.brokerPort !== undefined ? parsePort(o.brokerPort) : undefined,
          ssid: o.ssid,
          deviceId: o.deviceId,
          timeoutMs: o.timeout,
          keep: o.keep,
          verbose: o.verbose,
        };
        const code = await runHil(opts, io);
        if (code !== 0) throw new CliError('hardware-in-the-loop check failed', code);
      });
  },
};
