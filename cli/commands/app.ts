/**
 * `mqsec app add|revoke|rotate|remove`: app principals, the backends that
 * join through the SDK (`import { connectApp } from 'mqsec'`) or `mqsec
 * sub` / `mqsec pub` with a 32-byte app key instead of a password
 * (docs/protocol.md §14). An app is a principal like a device: it shows in
 * `mqsec device list`, holds group keys of the groups its role reads or
 * writes, and is re-keyed out of them when revoked or removed.
 */
import { existsSync } from 'node:fs';
import { toHex } from '../../firmware/core/bytes.js';
import { CliError, DEFAULT_DATA_DIR, type CommandModule } from '../command.js';
import { provisionPrincipal, rotatePrincipal, withRegistry, writeDeviceConfig, configBroker, readExistingConfig, KS_DATA_HELP, KS_DB_HELP, BROKER_FLAVOUR_HELP, type ConfigBroker, type KeyOutputOpts } from './shared.js';



export const defaultAppConfigPath = (id: string) => `app-config-${id}.json`;


export const appCommand: CommandModule = {
  name: 'app',
  register(program, io) {
    const app = program.command('app').description('manage app principals: backends that join with an app key through the SDK or `mqsec sub`/`mqsec pub`');

    const keyOutput = (id: string, key: Uint8Array, o: KeyOutputOpts, verb: string, configPath: string | undefined, broker: ConfigBroker) => {
      if (configPath) writeDeviceConfig(configPath, id, key, broker.host, broker.port, broker.flavour);
      if (o.json) io.out(JSON.stringify({ id, key: toHex(key), url: `mqtt://${broker.host}:${broker.port}`, ...(broker.flavour ? { flavour: broker.flavour } : {}), ...(configPath ? { config: configPath } : {}) }));
      else {
        io.out(`app ${id} ${verb}`);
        io.out(`key: ${toHex(key)}`);
        if (configPath) io.out(`config written to ${configPath} (mode 0600): mqsec sub --config ${configPath} -t '...'`);
      }
      key.fill(0);
    };

    app
      .command('add <name>')
      .description('register an app principal and print its new 32-byte key (shown once)')
      .option('--role <role>', 'role (built in: app; a custom role for narrower grants)', 'app')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--keyservice-data <dir>', KS_DATA_HELP)
      .option('--keyservice-db <url>', KS_DB_HELP)
      .option('--json', 'print {"id","key","url"} as JSON and write the app config file')
      .option('--config <file>', 'app config file to write (default with --json: app-config-<name>.json)')
      .option('--broker-host <host>', 'broker host as the app reaches it (default 127.0.0.1)')
      .option('--broker-port <n>', 'broker port for the config file (default 1883)')
      .option('--broker-flavour <name>', BROKER_FLAVOUR_HELP)
      .action(async (name: string, o: KeyOutputOpts & { role: string }) => {
        const broker = configBroker(o);
        const configPath = o.config ?? (o.json ? defaultAppConfigPath(name) : undefined);
        if (configPath) readExistingConfig(configPath, name, 'app'); // refuse to overwrite another principal's config before registering
        // the one provisioning path of every principal: K split between the registry and the key service (§14.2)
        const { key } = await provisionPrincipal(o, name, o.role);
        keyOutput(name, key, o, `added (role ${o.role})`, configPath, broker);
      });

    app
      .command('revoke <name>')
      .description('revoke an app: a running broker closes its sessions within a second and re-keys its groups')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--keyservice-data <dir>', KS_DATA_HELP)
      .option('--keyservice-db <url>', KS_DB_HELP)
      .action(async (name: string, o: { data: string; keyserviceData?: string; keyserviceDb?: string }) => {
        await withRegistry(o.data, async (r) => {
          if (!(await r.getDevice(name))) throw new CliError(`unknown app "${name}"`);
          await r.revokeDevice(name);
        }, { create: false, keyServiceData: o.keyserviceData, keyServiceDb: o.keyserviceDb });
        io.out(`app ${name} revoked`);
      });

    app
      .command('remove <name>')
      .description('delete an app principal and its key, tickets and counter (its groups are re-keyed)')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--keyservice-data <dir>', KS_DATA_HELP)
      .option('--keyservice-db <url>', KS_DB_HELP)
      .action(async (name: string, o: { data: string; keyserviceData?: string; keyserviceDb?: string }) => {
        await withRegistry(o.data, async (r) => {
          if (!(await r.getDevice(name))) throw new CliError(`unknown app "${name}"`);
          await r.removeDevice(name);
        }, { create: false, keyServiceData: o.keyserviceData, keyServiceDb: o.keyserviceDb });
        io.out(`app ${name} removed`);
      });

    app
      .command('rotate <name>')
      .description('issue a new app key (the old key and tickets stop working; re-activates a revoked app); rewrites its app config, keeping the broker address')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--keyservice-data <dir>', KS_DATA_HELP)
      .option('--keyservice-db <url>', KS_DB_HELP)
      .option('--json', 'print {"id","key","url"} as JSON and write the app config file')
      .option('--config <file>', 'app config file to rewrite (default: app-config-<name>.json if it exists, or with --json)')
      .option('--broker-host <host>', 'broker host for the config file (default: the one already in it)')
      .option('--broker-port <n>', 'broker port for the config file (default: the one already in it)')
      .option('--broker-flavour <name>', `${BROKER_FLAVOUR_HELP} (default: the one already in it)`)
      .action(async (name: string, o: KeyOutputOpts) => {
        const configPath = o.config ?? (o.json || existsSync(defaultAppConfigPath(name)) ? defaultAppConfigPath(name) : undefined);
        const existing = configPath ? readExistingConfig(configPath, name, 'app') : undefined;
        const broker = configBroker(o, existing);
        const { key } = await rotatePrincipal(o, name);
        keyOutput(name, key, o, 'rotated', configPath, broker);
      });
  },
};
