/**
 * `mqsec device-check` (npm run device:check): the ESP32 firmware builds
 * checked on the host up to the XS linker's preload, without ESP-IDF or a
 * board; see tools/link-check.ts. Prints "skipped: ..." without an SDK.
 */
import { CliError, type CommandModule } from '../command.js';
import { CONFIG_PLATFORMS, runLinkCheck } from '../../tools/link-check.js';

export const deviceCheckCommand: CommandModule = {
  name: 'device-check',
  register(program, io) {
    program
      .command('device-check')
      .description('check each board\'s settings in the generated config, and compile and preload-link the ESP32 builds on the host, without ESP-IDF (needs MODDABLE)')
      .option('--platform <name...>', `platforms to check (${CONFIG_PLATFORMS.join(', ')})`)
      .option('--settings-only', 'only check that each board\'s settings reach its generated config (no compile)')
      .option('--keep', 'keep the temporary build directories')
      .option('--verbose', 'show mcconfig, make and xsl output')
      .action(async (o: { platform?: string[]; settingsOnly?: boolean; keep?: boolean; verbose?: boolean }) => {
        const platforms = o.platform ?? [...CONFIG_PLATFORMS];
        for (const p of platforms) if (!(CONFIG_PLATFORMS as readonly string[]).includes(p)) throw new CliError(`unknown platform "${p}" (${CONFIG_PLATFORMS.join(', ')})`);
        const code = await runLinkCheck({ platforms, settingsOnly: o.settingsOnly, keep: o.keep, verbose: o.verbose }, io);
        if (code !== 0) throw new CliError('device-check failed', code);
      });
  },
};
