/** `mqsec role list|add`. */
import { DEFAULT_DATA_DIR, type CommandModule } from '../command.js';
import { withRegistry, DB_OPTION_HELP } from './shared.js';

export const roleCommand: CommandModule = {
  name: 'role',
  register(program, io) {
    const role = program.command('role').description('roles: named sets of allow rules');
    role
      .command('list')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--db <url>', DB_OPTION_HELP)
      .option('--json', 'JSON output')
      .action(async (o: { data: string; db?: string; json?: boolean }) => {
        const roles = await withRegistry(o, (r) => r.listRoles());
        if (o.json) return io.out(JSON.stringify(roles));
        for (const r of roles) {
          io.out(`${r.name}${r.plaintext ? ' (receives plaintext)' : ''}`);
          for (const rule of r.rules) io.out(`  allow ${rule.action.padEnd(9)} ${rule.filter}`);
        }
      });
    role
      .command('add <name>')
      .description('add a role with no rules (deny everything until `mqsec acl add`)')
      .option('--plaintext', 'plain MQTT clients of this role receive decrypted device payloads')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--db <url>', DB_OPTION_HELP)
      .action(async (name: string, o: { data: string; db?: string; plaintext?: boolean }) => {
        await withRegistry(o, (r) => r.addRole(name, { plaintext: o.plaintext }));
        io.out(`role ${name} added`);
      });
  },
};
