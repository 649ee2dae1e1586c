/**
 * `mqsec sim`: a fleet of simulated ESP32 sensor nodes running the real
 * firmware modules, with a verifying backend subscriber, faults and
 * attackers; live view on a TTY, a summary table (or one JSON object) at the end.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DEVICES_PER_WORKER, runFleet, type FleetOptions, type FleetResult } from '../../host-sim/fleet/fleet.js';
import { LiveView, summaryTable } from '../../host-sim/fleet/live-view.js';
import { formatTopicModes } from '../../host-sim/fleet/topic-modes.js';
import { CliError, decimalNumber, wholeNumber, type CliIo, type CommandModule } from '../command.js';
import { deviceKeyBytes, parseDeviceConfig } from '../../firmware/app/device-config.js';
import { isMqsecError } from '../../firmware/core/errors.js';
import { simKeyServiceDir, startSimNodes, type SimNode } from '../../host-sim/fleet/cluster-nodes.js';
import { DB_URL_EXPECTED, isPostgresUrl, openRegistry, splitDbPassword } from '../../broker/registry/open.js';
import { registryCliError } from './shared.js';

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
  keyserviceData?: string;
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
  /** Several running broker nodes (comma-separated mqtt:// URLs) sharing the registry in --data. */
  brokers?: string;
  /** Start this many `mqsec broker --cluster` nodes for the run (needs --cluster). */
  nodes?: number;
  cluster?: string;
  /** The registry of --broker, --brokers or --nodes in PostgreSQL (postgres://...) instead of SQLite in --data. */
  db?: string;
  killNode?: string[];
  restartAfter?: number;
  /** End-to-end mode for the device topics (docs/protocol.md §14). */
  e2e?: boolean;
  /** `stock`: a stock broker with `mqsec keyservice --flavour ...` beside it (docs/protocol.md §15). */
  flavour?: 'mqsec' | 'stock';
}

/** `--kill-node N@T`: node N (1-based) at T seconds. */
export function parseKill(spec: string): { node: number; atS: number } {
  const m = /^(\d{1,3})@(\d+(?:\.\d+)?)$/.exec(spec);
  if (!m || Number(m[1]) < 1) throw new CliError(`--kill-node must look like N@SECONDS (node 1..n), got "${spec}"`);
  return { node: Number(m[1]), atS: Number(m[2]) };
}

export function printSummary(io: CliIo, r: FleetResult): void {
  io.out('');
  io.out('mqsec fleet summary');
  io.out(
    summaryTable([
      ['devices', r.devices],
      ...(r.flavour === 'stock' ? ([['broker', 'stock broker, mqsec key service beside it (docs/protocol.md §15)']] as [string, string][]) : []),
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
      ...(r.mode === 'e2e'
        ? ([['e2e dropped by the backend', Object.keys(r.e2e_dropped).length ? Object.entries(r.e2e_dropped).map(([k, v]) => `${k} ${v}`).join(', ') + ' (REPLAY: copies of readings it had)' : 0]] as [string, string | number][])
        : []),
      ['out of order', r.out_of_order],
      ['errors (retried)', r.errors_by_code && r.errors ? `${r.errors} (${Object.entries(r.errors_by_code).sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k} ${v}`).join(', ')})` : r.errors],
      ['handshake p50 / p99 ms', `${r.handshake_ms_p50 ?? '-'} / ${r.handshake_ms_p99 ?? '-'}`],
      ['broker restarts', r.broker_restarts],
      ['drops injected', r.drops_injected],
      ['power cuts', r.power_cuts],
      ['attacks refused / accepted', `${r.attacks.refused} / ${r.attacks.accepted}`],
      ['commands applied by nodes', r.commands_applied],
      ['duration s', r.duration_s],
      ...(r.reconnects
        ? ([
            ['reconnects phase 1 / phase 2', `${r.reconnects.phase1} / ${r.reconnects.phase2} (phase-2 share ${shareOf(r.reconnects.phase2, r.reconnects.phase1 + r.reconnects.phase2)})`],
            ['reconnect p50 / p99 ms', `${r.reconnects.ms_p50 ?? '-'} / ${r.reconnects.ms_p99 ?? '-'}`],
          ] as [string, string][])
        : []),
      ...(r.nodes ? ([['nodes killed / restarted', `${r.nodes.kills} / ${r.nodes.restarts}`], ['node CPU s', Object.entries(r.nodes.cpu_ms).map(([id, ms]) => `${id} ${(ms / 1000).toFixed(1)}`).join(', ')]] as [string, string][]) : []),
      ...(r.groups.length > 1 || r.groups[0]?.thread_id !== 0
        ? ([['worker threads (nodes / sent)', r.groups.map((g) => `#${g.thread_id}: ${g.devices} / ${g.sent}`).join(', ')]] as [string, string][])
        : []),
    ]),
  );
  if (r.topic_modes.length) {
    io.out(`  protection mode of the device topics (${r.mode === 'e2e' ? 'run with --e2e' : 'hop by hop unless a rule says e2e'}):`);
    for (const l of formatTopicModes(r.topic_modes)) io.out(`    ${l}`);
  }
  if (r.worker_failures.length) io.out(`  worker failures: ${r.worker_failures.join('; ')}`);
  if (r.missing_sample.length) io.out(`  missing (sample): ${r.missing_sample.join(', ')}`);
}

function shareOf(part: number, total: number): string {
  return total === 0 ? '-' : `${((100 * part) / total).toFixed(1)} %`;
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
  if (o.flavour === 'stock') {
    if (!o.broker || !o.data) throw new CliError("--flavour stock needs --broker mqtt://HOST:PORT and --data DIR (the key service's data directory)");
    if (o.brokers || o.nodes !== undefined) throw new CliError('--flavour stock runs against one stock broker (--broker)');
    if (o.deviceConfig?.length) throw new CliError('--flavour stock provisions its own devices (role simstock): --device-config is for the mqsec broker');
  }
  if (o.broker && !o.data) throw new CliError('--broker needs --data DIR (the broker data directory, to provision the simulated devices)');
  if ([o.broker, o.brokers, o.nodes].filter((x) => x !== undefined).length > 1) throw new CliError('give one of --broker, --brokers, --nodes');
  if (o.brokers && !o.data) throw new CliError('--brokers needs --data DIR (the registry the nodes share, to provision the simulated devices)');
  if (o.nodes !== undefined && !o.cluster) throw new CliError('--nodes needs --cluster redis://HOST:PORT (the Redis the nodes run over)');
  if (o.cluster && o.nodes === undefined) throw new CliError('--cluster goes with --nodes N (nodes the run starts); for running nodes give --brokers');
  if (o.killNode?.length && o.nodes === undefined) throw new CliError('--kill-node needs nodes the run starts itself (--nodes N --cluster URL): it must know their processes');
  const kills = (o.killNode ?? []).map(parseKill);
  for (const k of kills) if (o.nodes !== undefined && k.node > o.nodes) throw new CliError(`--kill-node ${k.node}@${k.atS}: there are ${o.nodes} nodes`);
  if (o.restartBroker && (o.brokers || o.nodes)) throw new CliError('--restart-broker works only with the embedded broker (with nodes: --kill-node)');
  if (o.restartBroker && o.broker) throw new CliError('--restart-broker works only with the embedded broker');
  if (o.db !== undefined && !o.broker && !o.brokers && o.nodes === undefined) throw new CliError('--db goes with --broker, --brokers or --nodes (the embedded broker keeps its registry in SQLite)');
  if (o.db !== undefined && !isPostgresUrl(o.db)) throw new CliError(DB_URL_EXPECTED);
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
  let simNodes: SimNode[] | undefined;
  try {
    let cluster: FleetOptions['cluster'];
    if (o.brokers) {
      cluster = { nodes: o.brokers.split(',').map((u) => parseBrokerUrl(u.trim())), dataDir: o.data!, keyServiceData: o.keyserviceData };
    } else if (o.nodes !== undefined) {
      // The nodes' data directory (master key, and the registry itself unless --db puts it in
      // PostgreSQL); each node locks its own name in it.
      const dataDir = join(workDir, 'cluster');
      mkdirSync(dataDir);
      // the master key and schema exist before the nodes open them together
      await (await openRegistry({ dataDir, db: o.db }).catch((e: unknown) => Promise.reject(registryCliError(e)))).close();
      simNodes = [];
      // The nodes get the URL without its password and the password as PGPASSWORD (which
      // node-postgres reads when the URL has none): a command line is readable by every
      // local user (ps, /proc/PID/cmdline), a process's environment only by its owner.
      const db = o.db === undefined ? undefined : splitDbPassword(o.db);
      const extraArgs = db === undefined ? [] : ['--db', db.url];
      const env = db?.password === undefined ? undefined : { PGPASSWORD: db.password };
      for (const n of await startSimNodes({ count: o.nodes, redisUrl: o.cluster!, dataDir, extraArgs, env, logLevel: o.logLevel === 'silent' ? undefined : o.logLevel })) simNodes.push(n);
      io.err(`started ${o.nodes} broker nodes: ${simNodes.map((n) => `${n.id} mqtt://${n.host}:${n.port} pid ${n.pid()}`).join(', ')}`);
      cluster = { nodes: simNodes.map((n) => ({ host: n.host, port: n.port })), dataDir, keyServiceData: simKeyServiceDir(dataDir), control: simNodes, kills, restartAfterS: o.restartAfter };
    }
    const result = await runFleet({
      cluster,
      db: o.db,
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
      e2e: o.e2e,
      flavour: o.flavour,
      logger,
      stopSignal,
      onTick: (s) => view?.update(s),
      ...extra,
    });
    if (simNodes) {
      // the CPU each node used, before they stop (SIGTERM: clean)
      await Promise.all(simNodes.map((n) => n.stop()));
      result.nodes = { ...(result.nodes ?? { kills: 0, restarts: 0 }), cpu_ms: Object.fromEntries(simNodes.map((n) => [n.id, Math.round(n.cpuMs())])) };
    }
    if (o.json) {
      const { devices, phase1_ok, phase2_ok, sent, verified, lost, duplicates, errors, handshake_ms_p50, handshake_ms_p99 } = result;
      io.out(JSON.stringify({ devices, phase1_ok, phase2_ok, sent, verified, lost, duplicates, errors, handshake_ms_p50, handshake_ms_p99, detail: result }));
    } else printSummary(io, result);
    if (result.attacks.accepted > 0) process.exitCode = 2;
    return result;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (simNodes) await Promise.all(simNodes.map((n) => n.stop()));
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
      .option('--keyservice-data <dir>', 'with --brokers: the data directory of the nodes\' key service (`mqsec keyservice --data`; cluster nodes run with --keyservice external), where K_ks of the simulated principals goes')
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
      .option('--brokers <urls>', 'several running broker nodes (mqtt://HOST:PORT,mqtt://HOST:PORT,...) sharing the registry in --data: devices spread over them and fail over')
      .option('--nodes <n>', 'start N broker nodes (mqsec broker --cluster) for the run, over the Redis of --cluster', wholeNumber('--nodes', 1, 64))
      .option('--cluster <redis-url>', 'the Redis the nodes of --nodes run over (redis://HOST:PORT)')
      .option('--db <url>', 'the registry of --broker / --brokers / --nodes is in this PostgreSQL database (postgres://USER@HOST:PORT/DB) instead of SQLite in --data; the nodes of --nodes share it')
      .option('--kill-node <N@T...>', 'kill node N (1-based, of --nodes) with SIGKILL at T seconds; it is started again --restart-after seconds later (repeatable)')
      .option('--restart-after <s>', 'seconds a killed node stays down (default 5)', decimalNumber('--restart-after', 0, 3600))
      .option('--e2e', 'end-to-end mode (docs/protocol.md §14): device topics under group keys, the verifying backend an app principal on the SDK')
      .option('--json', 'print one JSON object at the end instead of tables')
      .option('--log-level <level>', 'pino log level for broker and devices (stderr)', 'silent')
      .option('--flavour <name>', 'mqsec (default), or stock: a stock broker with `mqsec keyservice --flavour ...` beside it (docs/protocol.md §15): the same worker fleet, nodes with broker.flavour "stock", every device topic end to end; needs --broker and --data (the key service\'s data directory)', 'mqsec')
      .action(async (opts: SimCliOptions & { flavour: string }) => {
        if (opts.flavour !== 'mqsec' && opts.flavour !== 'stock') throw new CliError('--flavour must be mqsec or stock');
        if (opts.sleepMode !== 'deep' && opts.sleepMode !== 'wait') throw new CliError('--sleep-mode must be deep or wait');
        if (opts.devices + (opts.deviceConfig?.length ?? 0) < 1) throw new CliError('nothing to simulate: give --devices N or --device-config FILE');
        await runSimCommand(opts, io);
      });
  },
};
