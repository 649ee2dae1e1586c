/**
 * `mqsec device-desktop` (npm run device:desktop): builds the firmware for
 * the Moddable desktop target and checks it end to end against a local
 * broker; see tools/desktop-run.ts. Prints "skipped: ..." without an SDK.
 */
import { CliError, wholeNumber, type CommandModule } from '../command.js';
import { runDesktop } from '../../tools/desktop-run.js';

export const deviceDesktopCommand: CommandModule = {
  name: 'device-desktop',
  register(program, io) {
    program
      .command('device-desktop')
      .description('build the firmware for Moddable `lin` and run it headless against a local broker (needs MODDABLE)')
      .option('--device-id <id>', 'device id to provision', 'desk-0001')
      .option('--client <kind>', 'MQTT client in the firmware: firmware (mqsec, QoS 1) or stock (the SDK mqtt module, QoS 0)', 'firmware')
      .option('--timeout <ms>', 'limit for each wait', wholeNumber('--timeout', 1000, 3_600_000), 60000)
      .option('--instrument', 'instrumented build: report the firmware XS heap use')
      .option('--no-group-keys', 'build the node with the board setting groupKeys false (it never asks the key service; for comparison)')
      .option('--e2e', "device topics end to end (rules sensors/%u/# and cmd/%u/# set to e2e), read by an app principal on the SDK")
      .option('--keep', 'keep the temporary build and data directory')
      .option('--verbose', 'show build and device output')
      .action(async (o: { deviceId: string; client: string; timeout: number; instrument?: boolean; groupKeys: boolean; e2e?: boolean; keep?: boolean; verbose?: boolean }) => {
        if (o.e2e && !o.groupKeys) throw new CliError('--e2e needs group keys (drop --no-group-keys)');
        if (o.client !== 'firmware' && o.client !== 'stock') throw new CliError(`unknown client "${o.client}" (firmware, stock)`);
        const code = await runDesktop({ deviceId: o.deviceId, client: o.client, timeoutMs: o.timeout, instrument: o.instrument, groupKeys: o.groupKeys, e2e: o.e2e, keep: o.keep, verbose: o.verbose }, io);
        if (code !== 0) throw new CliError('device-desktop check failed', code);
      });
  },
};
