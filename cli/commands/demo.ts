/**
 * `mqsec demo` (what `npm start` runs): the embedded broker, 20 simulated
 * nodes, the verifying backend and one attacker, with the live view, until
 * Ctrl-C. Prints where the broker listens, an app account to watch it with,
 * a command to send a node, and what the view's numbers mean.
 */
import type { FleetOptions, StartedInfo } from '../../host-sim/fleet/fleet.js';
import { wholeNumber, type CliIo, type CommandModule } from '../command.js';
import { MAX_DEVICES, runSimCommand } from './sim.js';

/** Each node wakes this often; the fleet's first boots are spread over one interval, so wakes are too. */
export const DEMO_INTERVAL_S = 5;
/** Readings a node publishes per wake (temperature and humidity). */
const READINGS_PER_WAKE = 2;

/** What the demo prints once its broker is up: how to watch, how to command a node, what the numbers mean. */
export function demoBanner(info: StartedInfo, devices: number, e2e = false): string[] {
  const login = `-h ${info.host} -p ${info.port} -u ${info.appUser} -P '${info.appPassword}'`;
  if (e2e)
    return [
      `mqsec demo (end to end): broker on mqtt://${info.host}:${info.port} (data in ${info.dataDir})`,
      ...(info.console ? [`operator console: ${info.console.url}`, ...(info.console.admin ? [`  log in as ${info.console.admin.name} with password ${info.console.admin.password} (shown once)`] : [])] : []),
      `${devices} simulated ESP32 nodes wake every ${DEMO_INTERVAL_S} s, ask the key service for their group keys, publish ${READINGS_PER_WAKE} readings`,
      'sealed end to end (QoS 1), listen briefly for commands, deep-sleep again.',
      '',
      'readings (sensors/<node>/#) and commands (cmd/<node>/#) are end to end (docs/protocol.md §14): the broker checks a',
      'channel MAC and forwards what it cannot read. Password accounts get no group keys, so mosquitto_sub sees nothing there;',
      'the verifying backend is an app principal on the SDK. The view shows each topic rule\'s mode and group epochs.',
      'Ctrl-C stops the demo and prints a summary.',
      '',
    ];
  return [
    `mqsec demo: broker on mqtt://${info.host}:${info.port} (data in ${info.dataDir})`,
    ...(info.console
      ? [
          `operator console: ${info.console.url}`,
          ...(info.console.admin ? [`  log in as ${info.console.admin.name} with password ${info.console.admin.password} (shown once)`] : []),
        ]
      : []),
    `${devices} simulated ESP32 nodes wake every ${DEMO_INTERVAL_S} s, one after another: connect (phase 1 on first boot, phase 2 after`,
    `each deep sleep), publish ${READINGS_PER_WAKE} sealed readings (QoS 1), listen briefly for commands, deep-sleep again.`,
    '',
    'watch the decrypted readings as the backend sees them:',
    `  mosquitto_sub ${login} -t 'sensors/#' -v`,
    `  npx mqtt sub ${login} -t 'sensors/#' -v`,
    'send a node a command, QoS 1 and retained, so a sleeping node gets it at its next wake (the view shows when it applied it):',
    `  mosquitto_pub ${login} -q 1 -r -t cmd/node-0001/interval -m 10`,
    `  (clear it afterwards: mosquitto_pub ${login} -q 1 -r -n -t cmd/node-0001/interval)`,
    '',
    'reading the view:',
    '  topic modes: the protection mode of each device topic rule: hop (sealed per hop, the broker re-seals, so this account',
    '    reads it) or e2e (group keys; `mqsec acl add ... --mode e2e`, or `mqsec demo --e2e`).',
    '  attacks rejected: an attacker records the logins it sees on the wire and replays them, forges them (one byte changed),',
    '    tries a registered device id with a plain password, or claims a live device id; the broker must refuse every one.',
    "  a reading's number n jumps by 32 at every wake (0, 1, 32, 33, 64, ...): nodes reserve numbers in flash in blocks of 32",
    '    (one flash write per block, not per reading) and deep sleep loses the rest of the block. Not loss: "verified" counts',
    '    each reading the backend received exactly once and in order.',
    'Ctrl-C stops the demo and prints a summary.',
    '',
  ];
}

export async function runDemo(
  o: { devices: number; port: number; durationS?: number; console?: FleetOptions['console']; e2e?: boolean },
  io: CliIo,
  onStarted?: (info: StartedInfo) => void,
) {
  return runSimCommand(
    {
      devices: o.devices,
      duration: o.durationS ?? Infinity, // until Ctrl-C
      drop: 0,
      latency: 0,
      clockSkew: 0,
      powerCut: 0,
      attackers: 1,
      sleepMode: 'deep',
      port: o.port,
      logLevel: 'silent',
      e2e: o.e2e,
    },
    io,
    {
      rate: (o.devices * READINGS_PER_WAKE) / DEMO_INTERVAL_S,
      bootSpreadS: DEMO_INTERVAL_S,
      console: o.console,
      onStarted: (info) => {
        for (const line of demoBanner(info, o.devices, o.e2e)) io.out(line);
        onStarted?.(info);
      },
    },
  );
}

export const demoCommand: CommandModule = {
  name: 'demo',
  register(program, io) {
    program
      .command('demo')
      .description('embedded broker + 20 simulated nodes + verifier + an attacker with a live view and the operator console, until Ctrl-C (npm start)')
      .option('--devices <n>', 'number of simulated nodes', wholeNumber('--devices', 1, MAX_DEVICES), 20)
      .option('--port <n>', 'broker port (default 1883, or a free port if taken)', wholeNumber('--port', 0, 65535))
      .option('--console-port <n>', 'operator console port (default 8080, or a free port if taken)', wholeNumber('--console-port', 0, 65535))
      .option('--no-console', 'do not serve the operator console')
      .option('--e2e', 'readings and commands end to end (group keys, docs/protocol.md §14) instead of hop by hop')
      .action(async (o: { devices: number; port?: number; consolePort?: number; console: boolean; e2e?: boolean }) => {
        const port = o.port ?? (await pickPort(1883));
        const consolePort = o.consolePort ?? (await pickPort(8080));
        await runDemo({ devices: o.devices, port, console: o.console ? { port: consolePort } : undefined, e2e: o.e2e }, io);
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
