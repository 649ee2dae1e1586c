/** `mqsec device add|list|show|revoke|rotate|remove`. */
import { toHex } from '../../firmware/core/bytes.js';
import { CliError, DEFAULT_DATA_DIR, parsePort, type CommandModule } from '../command.js';
import { deviceLine, withRegistry, writeDeviceConfig } from './shared.js';

interface KeyOutputOpts {
  data: string;
  json?: boolean;
  config?: string;
  brokerHost: string;
  brokerPort: string;
}

export const deviceCommand: CommandModule = {
  name: 'device',
  register(program, io) {
    const device = program.command('device').description('manage mqsec devices (registry in the data directory)');

    const keyOutput = (id: string, key: Uint8Array, o: KeyOutputOpts, verb: string) => {
      const configPath = o.config ?? (o.json ? `device-config-${id}.json` : undefined);
      if (configPath) writeDeviceConfig(configPath, id, key, o.brokerHost, parsePort(o.brokerPort));
      if (o.json) {
        io.out(JSON.stringify({ id, key: toHex(key), ...(configPath ? { config: configPath } : {}) }));
      } else {
        io.out(`device ${id} ${verb}`);
        io.out(`key: ${toHex(key)}`);
        if (configPath) io.out(`config written to ${configPath} (mode 0600)`);
      }
      key.fill(0);
    };

    device
      .command('add <id>')
      .description('register a device and print its new 32-byte key (shown once)')
      .requiredOption('--role <role>', 'role (built in: sensor, app, admin)')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--json', 'print {"id","key"} as JSON and write the device config file')
      .option('--config <file>', 'device config file to write (default with --json: device-config-<id>.json)')
      .option('--broker-host <host>', 'broker host for the config file', '127.0.0.1')
      .option('--broker-port <n>', 'broker port for the config file', '1883')
      .action(async (id: string, o: KeyOutputOpts & { role: string }) => {
        const { key } = await withRegistry(o.data, (r) => r.addDevice(id, o.role));
        keyOutput(id, key, o, `added (role ${o.role})`);
      });

    device
      .command('list')
      .description('list devices')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--json', 'JSON output')
      .action(async (o: { data: string; json?: boolean }) => {
        const list = await withRegistry(o.data, (r) => r.listDevices(), { create: false });
        if (o.json) io.out(JSON.stringify(list));
        else for (const d of list) io.out(deviceLine(d));
      });

    device
      .command('show <id>')
      .description('show one device (never its key)')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--json', 'JSON output')
      .action(async (id: string, o: { data: string; json?: boolean }) => {
        const info = await withRegistry(o.data, (r) => {
          const d = r.getDevice(id);
          if (!d) throw new CliError(`unknown device "${id}"`);
          return { ...d, tickets: r.ticketCount(id), counter: r.getCounter(id) };
        }, { create: false });
        if (o.json) io.out(JSON.stringify(info));
        else {
          io.out(deviceLine(info));
          io.out(`phase-2 tickets: ${info.tickets}, highest counter: ${info.counter}`);
        }
      });

    device
      .command('revoke <id>')
      .description('revoke a device: a running broker closes its sessions within a second; tickets die')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .action(async (id: string, o: { data: string }) => {
        await withRegistry(o.data, (r) => {
          if (!r.getDevice(id)) throw new CliError(`unknown device "${id}"`);
          r.revokeDevice(id);
        }, { create: false });
        io.out(`device ${id} revoked`);
      });

    device
      .command('remove <id>')
      .description('delete a device and its key, tickets and counter (a running broker closes its sessions within a second)')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .action(async (id: string, o: { data: string }) => {
        await withRegistry(o.data, (r) => {
          if (!r.getDevice(id)) throw new CliError(`unknown device "${id}"`);
          r.removeDevice(id);
        }, { create: false });
        io.out(`device ${id} removed`);
      });

    device
      .command('rotate <id>')
      .description('issue a new device key (old key and tickets stop working; re-activates a revoked device)')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--json', 'print {"id","key"} as JSON and write the device config file')
      .option('--config <file>', 'device config file to write')
      .option('--broker-host <host>', 'broker host for the config file', '127.0.0.1')
      .option('--broker-port <n>', 'broker port for the config file', '1883')
      .action(async (id: string, o: KeyOutputOpts) => {
        const { key } = await withRegistry(o.data, (r) => {
          if (!r.getDevice(id)) throw new CliError(`unknown device "${id}"`);
          return r.rotateDevice(id);
        }, { create: false });
        keyOutput(id, key, o, 'rotated');
      });
  },
};
