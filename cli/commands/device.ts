/** `mqsec device add|list|show|revoke|rotate|remove`. */
import { existsSync } from 'node:fs';
import { toHex } from '../../firmware/core/bytes.js';
import { isLoopbackHost } from '../../tools/moddable.js';
import { CliError, DEFAULT_DATA_DIR, type CommandModule } from '../command.js';
import { deviceLine, provisionPrincipal, rotatePrincipal, withRegistry, writeDeviceConfig, DB_OPTION_HELP, configBroker, readExistingConfig, KS_DATA_HELP, KS_DB_HELP, type KeyOutputOpts } from './shared.js';



const defaultConfigPath = (id: string) => `device-config-${id}.json`;


export const deviceCommand: CommandModule = {
  name: 'device',
  register(program, io) {
    const device = program.command('device').description('manage mqsec devices (registry in the data directory)');

    const keyOutput = (id: string, key: Uint8Array, o: KeyOutputOpts, verb: string, configPath: string | undefined, broker: { host: string; port: number }) => {
      if (configPath) {
        writeDeviceConfig(configPath, id, key, broker.host, broker.port);
        if (isLoopbackHost(broker.host)) {
          io.err(
            `warning: ${configPath} points the device at ${broker.host}, this computer's loopback address: fine for the simulator, ` +
              `unreachable for a board (give --broker-host <LAN address> for a device build)`,
          );
        }
      }
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
      .option('--keyservice-data <dir>', KS_DATA_HELP)
      .option('--keyservice-db <url>', KS_DB_HELP)
      .option('--db <url>', DB_OPTION_HELP)
      .option('--json', 'print {"id","key"} as JSON and write the device config file')
      .option('--config <file>', 'device config file to write (default with --json: device-config-<id>.json)')
      .option('--broker-host <host>', 'broker host as the device reaches it (default 127.0.0.1: simulator only)')
      .option('--broker-port <n>', 'broker port for the config file (default 1883)')
      .action(async (id: string, o: KeyOutputOpts & { role: string }) => {
        const broker = configBroker(o);
        const configPath = o.config ?? (o.json ? defaultConfigPath(id) : undefined);
        const { key } = await provisionPrincipal(o, id, o.role);
        keyOutput(id, key, o, `added (role ${o.role})`, configPath, broker);
      });

    device
      .command('list')
      .description('list devices')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--db <url>', DB_OPTION_HELP)
      .option('--json', 'JSON output')
      .action(async (o: { data: string; db?: string; json?: boolean }) => {
        const list = await withRegistry(o, (r) => r.listDevices(), { create: false });
        if (o.json) io.out(JSON.stringify(list));
        else for (const d of list) io.out(deviceLine(d));
      });

    device
      .command('show <id>')
      .description('show one device (never its key)')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--db <url>', DB_OPTION_HELP)
      .option('--json', 'JSON output')
      .action(async (id: string, o: { data: string; db?: string; json?: boolean }) => {
        const info = await withRegistry(o, async (r) => {
          const d = await r.getDevice(id);
          if (!d) throw new CliError(`unknown device "${id}"`);
          return { ...d, tickets: await r.ticketCount(id), counter: await r.getCounter(id) };
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
      .option('--keyservice-data <dir>', KS_DATA_HELP)
      .option('--keyservice-db <url>', KS_DB_HELP)
      .option('--db <url>', DB_OPTION_HELP)
      .action(async (id: string, o: { data: string; db?: string; keyserviceData?: string; keyserviceDb?: string }) => {
        await withRegistry(o, async (r) => {
          if (!(await r.getDevice(id))) throw new CliError(`unknown device "${id}"`);
          await r.revokeDevice(id);
        }, { create: false, keyServiceData: o.keyserviceData, keyServiceDb: o.keyserviceDb });
        io.out(`device ${id} revoked`);
      });

    device
      .command('remove <id>')
      .description('delete a device and its key, tickets and counter (a running broker closes its sessions within a second)')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--keyservice-data <dir>', KS_DATA_HELP)
      .option('--keyservice-db <url>', KS_DB_HELP)
      .option('--db <url>', DB_OPTION_HELP)
      .action(async (id: string, o: { data: string; db?: string; keyserviceData?: string; keyserviceDb?: string }) => {
        await withRegistry(o, async (r) => {
          if (!(await r.getDevice(id))) throw new CliError(`unknown device "${id}"`);
          await r.removeDevice(id);
        }, { create: false, keyServiceData: o.keyserviceData, keyServiceDb: o.keyserviceDb });
        io.out(`device ${id} removed`);
      });

    device
      .command('rotate <id>')
      .description(
        'issue a new device key (old key and tickets stop working; re-activates a revoked device); ' +
          'rewrites the device config (--config, or device-config-<id>.json here) with the new key, keeping its broker address',
      )
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--keyservice-data <dir>', KS_DATA_HELP)
      .option('--keyservice-db <url>', KS_DB_HELP)
      .option('--db <url>', DB_OPTION_HELP)
      .option('--json', 'print {"id","key"} as JSON and write the device config file')
      .option('--config <file>', 'device config file to rewrite (default: device-config-<id>.json if it exists, or with --json)')
      .option('--broker-host <host>', 'broker host for the config file (default: the one already in it)')
      .option('--broker-port <n>', 'broker port for the config file (default: the one already in it)')
      .action(async (id: string, o: KeyOutputOpts) => {
        // Decided before the key changes: a config that cannot be rewritten stops the rotation.
        const configPath = o.config ?? (o.json || existsSync(defaultConfigPath(id)) ? defaultConfigPath(id) : undefined);
        const existing = configPath ? readExistingConfig(configPath, id, 'device') : undefined;
        const broker = configBroker(o, existing);
        const { key } = await rotatePrincipal(o, id);
        keyOutput(id, key, o, 'rotated', configPath, broker);
        if (!configPath) {
          io.err(
            `note: no device config rewritten (no --config, no ${defaultConfigPath(id)} here): a config made earlier still holds the old key; ` +
              `\`npx tsx tools/device-config.ts --data ${o.data} ...\` refuses it`,
          );
        }
      });
  },
};
