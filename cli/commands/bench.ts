/**
 * `mqsec bench [--quick] [--json] [--no-xs] [--only sections]`: benchmarks of mqsec against
 * plain MQTT and TLS (Mosquitto) and plain Aedes, all started on loopback
 * by the command itself (bench/run.ts). Human output: Markdown tables;
 * `--json`: one JSON object on stdout and nothing else (progress goes to
 * stderr).
 */
import type { CliIo, CommandModule } from '../command.js';

export interface BenchCliOptions {
  quick?: boolean;
  json?: boolean;
  xs: boolean;
  only?: string;
}

export async function runBenchCommand(opts: BenchCliOptions, io: CliIo): Promise<void> {
  const { benchMain } = await import('../../bench/run.js');
  await benchMain({ quick: opts.quick ?? false, json: opts.json ?? false, xs: opts.xs, only: opts.only }, io.out, (line) => io.err(`[bench] ${line}`));
}

export const benchCommand: CommandModule = {
  name: 'bench',
  register(program, io) {
    program
      .command('bench')
      .description('benchmark mqsec against plain MQTT, TLS (Mosquitto) and plain Aedes on loopback')
      .option('--quick', 'short runs (whole bench in a few minutes)')
      .option('--json', 'print one JSON object on stdout and nothing else')
      .option('--no-xs', 'skip the device measurements inside the XS engine')
      .option('--only <sections>', 'comma-separated subset: handshakes, throughput, rates, device')
      .action(async (opts: BenchCliOptions) => {
        await runBenchCommand(opts, io);
      });
  },
};
