/**
 * Turns a device config file from `mqsec device add ID --json` into the
 * firmware module `mqsec/device-config` for a Moddable build:
 *
 *   MQSEC_WIFI_PASSWORD=... npx tsx tools/device-config.ts \
 *     --config device-sensor-07.json --out build/config-sensor-07 \
 *     [--ssid lab-wifi] [--host 192.168.1.10] [--port 1883] [--data ./data]
 *
 * then build with MQSEC_CONFIG_DIR=build/config-sensor-07 (docs/firmware.md).
 * The Wi-Fi password is read from the environment, never from a flag.
 *
 * It refuses what would build a node that can never log in: a loopback broker
 * address (a board cannot reach the build host's 127.0.0.1; `--allow-loopback`
 * for the desktop target), and, given the broker's data directory (`--data`),
 * a key the registry no longer accepts (rotated, revoked or removed device).
 */
import { Command } from 'commander';
import { checkConfigAgainstRegistry, isLoopbackHost, loadDeviceConfig, writeDeviceConfigModule } from './moddable.js';

export async function deviceConfigMain(argv: string[]): Promise<number> {
  const program = new Command('device-config')
    .requiredOption('--config <file>', 'device config JSON from `mqsec device add --json`')
    .requiredOption('--out <dir>', 'directory for mqsec-device-config.js (keep it out of version control)')
    .option('--ssid <ssid>', 'Wi-Fi network (password from MQSEC_WIFI_PASSWORD)')
    .option('--host <host>', 'broker host as the device sees it')
    .option('--port <n>', 'broker port')
    .option('--data <dir>', "the broker's data directory: refuse a key the registry no longer accepts")
    .option('--allow-loopback', 'accept a loopback broker address (desktop target only: a board cannot reach it)')
    .exitOverride();
  try {
    program.parse(argv);
    const o = program.opts<{ config: string; out: string; ssid?: string; host?: string; port?: string; data?: string; allowLoopback?: boolean }>();
    const config = loadDeviceConfig(o.config, {
      host: o.host,
      port: o.port !== undefined ? Number(o.port) : undefined,
      ssid: o.ssid,
      wifiPassword: process.env.MQSEC_WIFI_PASSWORD,
    });
    if (isLoopbackHost(config.broker.host) && !o.allowLoopback) {
      throw new Error(
        `broker host ${config.broker.host} is this computer's loopback address, which a board cannot reach: ` +
          `give the broker's LAN address with --host (or provision with \`mqsec device add ... --broker-host <address>\`)`,
      );
    }
    if (o.data) {
      const check = await checkConfigAgainstRegistry(config, o.data);
      if (!check.ok) throw new Error(check.reason);
    }
    const file = writeDeviceConfigModule(config, o.out);
    process.stdout.write(`wrote ${file} for device ${config.id} (broker ${config.broker.host}:${config.broker.port}${config.wifi ? `, Wi-Fi ${config.wifi.ssid}` : ''})\n`);
    if (!o.data) process.stdout.write(`key not checked against the registry (give --data <broker data dir> to refuse a rotated or revoked key)\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`device-config: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  deviceConfigMain(process.argv).then((code) => {
    process.exitCode = code;
  });
}
