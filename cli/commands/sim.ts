/**
 * `mqsec sim`: a fleet of simulated ESP32 sensor nodes running the real
 * firmware modules, with a verifying backend subscriber, faults and
 * attackers; live view on a TTY, a summary table (or one JSON object) at the end.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DEVICES_PER_WORKER, runFleet, type FleetOptions, type FleetResult } from '../../host-sim/fleet/fleet.js';
import { LiveView, summaryTable } from '../../host-sim/fleet/live-view.js';
import { CliError, decimalNumber, wholeNumber, type CliIo, type CommandModule } from '../command.js';
import { deviceKeyBytes, parseDeviceConfig } from '../../firmware/app/device-config.js';
import { isMqsecError } from '../../firmware/core/errors.js';

/** Upper bounds of the fleet flags (the demo shares them). */
export const MAX_DEVICES = 100_000;
/** Timers cannot wait longer than ~24.8 days; a year-long run is not a simulation anyone means. */
export const MAX_DURATION_S = 1_000_000;

export function parseBrokerUrl(url: string): { host: string; port: number } {
  const m = /^mqtt:\/\/([^/:]+):(\d{1,5})\/?$/.exec(url);
  if (!m) throw new CliError(`--broker must look like mqtt://HOST:PORT, got "${url}"`);
  return { host: m[1], port: Number(m[2]) };
}

export interface SimCliOptions {
  devices: number;
  /** Device config files of devices already registered (run in addition to --devices). */
  deviceConfig?: string[];
  duration?: number;
  rate?: number;
  broker?: string;
  data?: string;
  json?: boolean;
  drop: number;
  restartBroker?: number;
  latency: number;
  clockSkew: number;
  powerCut: number;
  attackers: number;
  sleepMode: 'deep' | 'wait';
  port?: number;
  workers?: number;
  logLevel: string;
}

export function printSummary(io: CliIo, r: FleetResult): void {
  io.out('');
  io.out('mqsec fleet summary');
  io.out(
    summaryTable([
      ['devices', r.devices],
      ['connected at end', r.connected_at_end],
      ['phase 1 handshakes', r.phase1_ok],
      ['phase 2 handshakes', r.phase2_ok],
      ['readings sent (QoS 1)', r.sent],
      ['verified by backend', r.verified],
      ['lost', r.lost],
      ...(r.revoked.length
        ? ([['revoked during the run', `${r.revoked.length} revoked (${r.revoked.slice(0, 5).join(', ')}${r.revoked.length > 5 ? ', ...' : ''}); ${r.held_by_revoked} of their readings undeliverable, not counted as lost`]] as [string, string][])
        : []),
      ['unacked at power cut', r.lost_to_power_cuts],
      ['routed twice by the broker', r.ingest_duplicates],
      ['duplicates at backend', `${r.duplicates} (of which MQTT redeliveries after a broker restart: ${r.backend_redeliveries})`],
      ['out of order', r.out_of_order],
      ['errors (retried)', r.errors],
      ['handshake p50 / p99 ms', `${r.handshake_ms_p50 ?? '-'} / ${r.handshake_ms_p99 ?? '-'}`],
      ['broker restarts', r.broker_restarts],
      ['drops injected', r.drops_injected],
      ['power cuts', r.power_cuts],
      ['attacks refused / accepted', `${r.attacks.refused} / ${r.attacks.accepted}`],
      ['commands applied by nodes', r.commands_applied],
      ['duration s', r.duration_s],
      ...(r.groups.length > 1 || r.groups[0]?.thread_id !== 0
        ? ([['worker threads (nodes / sent)', r.groups.map((g) => `#${g.thread_id}: ${g.devices} / ${g.sent}`).join(', ')]] as [string, string][])
        : []),
    ]),
  );
  if (r.worker_failures.length) io.out(`  worker failures: ${r.worker_failures.join('; ')}`);
  if (r.missing_sample.length) io.out(`  missing (sample): ${r.missing_sample.join(', ')}`);
}

/** Reads device config files (the console's download, `mqsec device add --json --config`); the key never goes into a message. */
export function loadDeviceConfigs(files: string[]): { id: string; key: Uint8Array }[] {
  return files.map((file) => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read device config ${file}: ${(e as Error).message}`);
    }
    try {
      const c = parseDeviceConfig(JSON.parse(text));
      return { id: c.id, key: deviceKeyBytes(c) };
    } catch (e) {
      throw new CliError(`device config ${file}: ${isMqsecError(e) ? e.message : 'not valid JSON'}`);
    }
  });
}

export async function runSimCommand(o: SimCliOptions, io: CliIo, extra: Partial<FleetOptions> = {}): Promise<FleetResult> {
  if (o.broker && !o.data) throw new CliError('--broker needs --data DIR (the broker data directory, to provision the simulated devices)');
  if (o.restartBroker && o.broker) throw new CliError('--restart-broker works only with the embedded broker');
  const logger = pino({ level: o.logLevel }, pino.destination(2));
  const view = o.json ? undefined : new LiveView({ stream: process.stderr });
  // The node storage and an embedded broker's registry and master key live here; removed
  // on every way out, including a second Ctrl-C that does not wait for the summary.
  const workDir = mkdtempSync(join(tmpdir(), 'mqsec-sim-'));
  const removeWorkDir = () => rmSync(workDir, { recursive: true, force: true });
  let stopRequested: () => void = () => {};
  const stopSignal = new Promise<void>((r) => (stopRequested = r));
  let signals = 0;
  const onSignal = () => {
    if (++signals === 1) {
      io.err('stopping: waiting for the nodes to settle, then the summary (Ctrl-C again to quit at once)');
      return stopRequested();
    }
    removeWorkDir();
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const result = await runFleet({
      workDir,
      devices: o.devices,
      provisioned: o.deviceConfig?.length ? loadDeviceConfigs(o.deviceConfig) : undefined,
      durationS: o.duration ?? 60,
      rate: o.rate,
      broker: o.broker ? { ...parseBrokerUrl(o.broker), dataDir: o.data! } : undefined,
      port: o.port,
      sleepMode: o.sleepMode,
      drop: o.drop,
      restartBrokerEveryS: o.restartBroker,
      latencyMs: o.latency,
      clockSkewMs: o.clockSkew,
      powerCut: o.powerCut,
      attackers: o.attackers,
      workers: o.workers,
      logger,
      stopSignal,
      onTick: (s) => view?.update(s),
      ...extra,
    });
    if (o.json) {
      const { devices, phase1_ok, phase2_ok, sent, verified, lost, duplicates, errors, handshake_ms_p50, handshake_ms_p99 } = result;
      io.out(JSON.stringify({ devices, phase1_ok, phase2_ok, sent, verified, lost, duplicates, errors, handshake_ms_p50, handshake_ms_p99, detail: result }));
    } else printSummary(io, result);
    if (result.attacks.accepted > 0) process.exitCode = 2;
    return result;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    removeWorkDir();
  }
}

export const simCommand: CommandModule = {
  name: 'sim',
  register(program, io) {
    program
      .command('sim')
      .description('run a fleet of simulated ESP32 sensor nodes (real firmware modules) with a verifying backend')
      .option('--devices <n>', 'number of simulated nodes the run provisions itself', wholeNumber('--devices', 0, MAX_DEVICES), 20)
      .option('--device-config <file...>', 'also run these registered devices, from their device config files (e.g. downloaded from the console)')
      .option('--duration <s>', 'seconds to run (default 60)', decimalNumber('--duration', 1, MAX_DURATION_S))
      .option('--rate <msg_per_s>', 'readings per second across the fleet (default: every node every 5 s)', decimalNumber('--rate', 0.01, 1_000_000))
      .option('--broker <url>', 'use a running mqsec broker (mqtt://HOST:PORT) instead of the embedded one')
      .option('--data <dir>', 'data directory of that broker (to provision the simulated devices)')
      .option('--port <n>', 'port of the embedded broker (default: a free port)', wholeNumber('--port', 0, 65535))
      .option('--sleep-mode <mode>', 'deep (disconnect between readings, phase 2 on wake) or wait (stay connected)', 'deep')
      .option('--drop <p>', 'probability that an outgoing write cuts the connection instead', decimalNumber('--drop', 0, 1), 0)
      .option('--restart-broker <s>', 'restart the embedded broker every S seconds', decimalNumber('--restart-broker', 1, MAX_DURATION_S))
      .option('--latency <ms>', 'one-way latency added to every device connection', wholeNumber('--latency', 0, 60_000), 0)
      .option('--clock-skew <ms>', 'random device clock offsets up to +/- ms (the protocol must not care)', wholeNumber('--clock-skew', 0, 86_400_000), 0)
      .option('--power-cut <p>', 'probability per node per second of a power cut (RAM lost, storage kept)', decimalNumber('--power-cut', 0, 1), 0)
      .option('--attackers <k>', 'attackers replaying and forging CONNECTs alongside the fleet', wholeNumber('--attackers', 0, 1000), 0)
      .option(
        '--workers <n>',
        `worker threads for the nodes; 0 = all in the main thread (default: 0 up to ${DEVICES_PER_WORKER} nodes, else one per ${DEVICES_PER_WORKER} nodes, at most CPUs - 1, at least 1)`,
        wholeNumber('--workers', 0, 256),
      )
      .option('--json', 'print one JSON object at the end instead of tables')
      .option('--log-level <level>', 'pino log level for broker and devices (stderr)', 'silent')
      .action(async (opts: SimCliOptions) => {
        if (opts.sleepMode !== 'deep' && opts.sleepMode !== 'wait') throw new CliError('--sleep-mode must be deep or wait');
        if (opts.devices + (opts.deviceConfig?.length ?? 0) < 1) throw new CliError('nothing to simulate: give --devices N or --device-config FILE');
        await runSimCommand(opts, io);
      });
  },
};
