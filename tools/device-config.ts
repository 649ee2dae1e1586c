/**
 * Turns a device config file from `mqsec device add ID --json` into the
 * firmware module `mqsec/device-config` for a Moddable build:
 *
 *   MQSEC_WIFI_PASSWORD=... npx tsx tools/device-config.ts \
 *     --config device-sensor-07.json --out build/config-sensor-07 \
 *     [--ssid lab-wifi] [--host 192.168.1.10] [--port 1883]
 *
 * then build with MQSEC_CONFIG_DIR=build/config-sensor-07 (docs/firmware.md).
 * The Wi-Fi password is read from the environment, never from a flag.
 */
import { Command } from 'commander';
import { loadDeviceConfig, writeDeviceConfigModule } from './moddable.js';

export async function deviceConfigMain(argv: string[]): Promise<number> {
  const program = new Command('device-config')
    .requiredOption('--config <file>', 'device config JSON from `mqsec device add --json`')
    .requiredOption('--out <dir>', 'directory for mqsec-device-config.js (keep it out of version control)')
    .option('--ssid <ssid>', 'Wi-Fi network (password from MQSEC_WIFI_PASSWORD)')
    .option('--host <host>', 'broker host as the device sees it')
    .option('--port <n>', 'broker port')
    .exitOverride();
  try {
    program.parse(argv);
    const o = program.opts<{ config: string; out: string; ssid?: string; host?: string; port?: string }>();
    const config = loadDeviceConfig(o.config, {
      host: o.host,
      port: o.port !== undefined ? Number(o.port) : undefined,
      ssid: o.ssid,
      wifiPassword: process.env.MQSEC_WIFI_PASSWORD,
    });
    const file = writeDeviceConfigModule(config, o.out);
    process.stdout.write(`wrote ${file} for device ${config.id} (broker ${config.broker.host}:${config.broker.port}${config.wifi ? `, Wi-Fi ${config.wifi.ssid}` : ''})\n`);
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
