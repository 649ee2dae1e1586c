/**
 * Entry of a broker child process: the benchmark runs each Node broker in its
 * own process, so the broker and the load generator do not share one event
 * loop (Mosquitto is a separate process anyway). Prints `READY <port>` on
 * stdout once listening; ends on SIGTERM.
 *
 *   node --import tsx bench/servers/child.ts aedes-plain
 *   node --import tsx bench/servers/child.ts mqsec <dataDir>
 *
 * With MQSEC_PROFILE_OUT=<file>: SIGUSR2 starts the V8 CPU profiler (so
 * start-up is not in the profile) and SIGTERM writes the profile to <file>
 * before the process ends (bench/profile.ts).
 */
import net from 'node:net';
import { Aedes } from 'aedes';

async function startAedesPlain(): Promise<{ port: number; close(): Promise<void> }> {
  const broker = await Aedes.createBroker();
  const server = net.createServer(broker.handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((r) => server.close(() => broker.close(() => r()))),
  };
}

/**
 * The mqsec broker on a registry the benchmark provisioned beforehand. Its
 * per-address and per-device authentication rate limits are raised: they
 * exist to slow down attackers, and every benchmark client comes from
 * 127.0.0.1, so the defaults would measure the limiter instead of the
 * broker. Nothing else is changed.
 */
async function startMqsec(dataDir: string): Promise<{ port: number; close(): Promise<void> }> {
  const { startBroker } = await import('../../broker/server.js');
  const unlimited = { ratePerSec: 1e9, burst: 1e9 };
  const broker = await startBroker({
    dataDir,
    port: 0,
    logLevel: 'warn',
    limits: { phase1PerAddress: unlimited, phase1PerDevice: unlimited, authPerAddress: unlimited, maxPending: 100_000, auditPerSecond: 5 },
  });
  return { port: broker.port, close: () => broker.stop() };
}

const kind = process.argv[2];
const started =
  kind === 'aedes-plain' ? await startAedesPlain() : kind === 'mqsec' && process.argv[3] ? await startMqsec(process.argv[3]) : undefined;
if (!started) {
  process.stderr.write(`unknown broker kind ${kind}\n`);
  process.exit(2);
}
const profileOut = process.env.MQSEC_PROFILE_OUT;
let stopProfile: (() => Promise<void>) | undefined;
if (profileOut) {
  const { Session } = await import('node:inspector/promises');
  const fs = await import('node:fs');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  process.on('SIGUSR2', () => void session.post('Profiler.start'));
  stopProfile = async () => {
    const { profile } = await session.post('Profiler.stop');
    fs.writeFileSync(profileOut, JSON.stringify(profile));
  };
}
process.stdout.write(`READY ${started.port}\n`);
process.on('SIGTERM', () => {
  void (stopProfile ? stopProfile().catch(() => undefined) : Promise.resolve())
    .then(() => started.close())
    .finally(() => process.exit(0));
});
