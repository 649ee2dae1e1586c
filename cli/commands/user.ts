/** `mqsec user add|list|disable|enable|remove`: password accounts for backend applications. */
import { CliError, DEFAULT_DATA_DIR, type CommandModule } from '../command.js';
import { withRegistry, DB_OPTION_HELP } from './shared.js';

export const userCommand: CommandModule = {
  name: 'user',
  register(program, io) {
    const user = program.command('user').description('manage username/password accounts for backend apps');
    user
      .command('add <name>')
      .description('add an account; the password is read from stdin (first line)')
      .requiredOption('--role <role>', 'role (built in: app, admin, sensor)')
      .option('--password-stdin', 'read the password from stdin (required: passwords never go on the command line)')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--db <url>', DB_OPTION_HELP)
      .action(async (name: string, o: { role: string; passwordStdin?: boolean; data: string; db?: string }) => {
        if (!o.passwordStdin) throw new CliError('give the password on stdin with --password-stdin');
        const password = (await io.readStdin()).split(/\r?\n/)[0] ?? '';
        await withRegistry(o, (r) => r.addAccount(name, o.role, password));
        io.out(`account ${name} added (role ${o.role})`);
      });
    user
      .command('list')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--db <url>', DB_OPTION_HELP)
      .option('--json', 'JSON output')
      .action(async (o: { data: string; db?: string; json?: boolean }) => {
        const list = await withRegistry(o, (r) => r.listAccounts(), { create: false });
        if (o.json) io.out(JSON.stringify(list));
        else for (const a of list) io.out(`${a.name.padEnd(24)} ${a.role.padEnd(12)} ${a.status}`);
      });
    user
      .command('remove <name>')
      .description('delete an account (a running broker closes its sessions within a second)')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--db <url>', DB_OPTION_HELP)
      .action(async (name: string, o: { data: string; db?: string }) => {
        await withRegistry(o, (r) => r.removeAccount(name), { create: false });
        io.out(`account ${name} removed`);
      });
    for (const [verb, status] of [
      ['disable', 'disabled'],
      ['enable', 'active'],
    ] as const) {
      user
        .command(`${verb} <name>`)
        .description(`${verb} an account (a running broker applies it within a second)`)
        .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
        .option('--db <url>', DB_OPTION_HELP)
        .action(async (name: string, o: { data: string; db?: string }) => {
          await withRegistry(o, (r) => r.setAccountStatus(name, status), { create: false });
          io.out(`account ${name} ${status}`);
        });
    }
  },
};
