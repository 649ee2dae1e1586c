/** `mqsec acl add|remove ROLE allow publish|subscribe FILTER`. */
import { CliError, DEFAULT_DATA_DIR, type CommandModule } from '../command.js';
import type { Action } from '../../broker/policy/policy.js';
import { withRegistry } from './shared.js';

function parseRule(allow: string, action: string): Action {
  if (allow !== 'allow') throw new CliError(`expected "allow", got "${allow}" (rules only allow; everything else is denied)`);
  if (action !== 'publish' && action !== 'subscribe') throw new CliError(`action must be publish or subscribe, got "${action}"`);
  return action;
}

export const aclCommand: CommandModule = {
  name: 'acl',
  register(program, io) {
    const acl = program.command('acl').description('allow rules of roles (topic filters, %u = device id or account name)');
    acl
      .command('add <role> <allow> <action> <filter>')
      .description('add a rule, e.g. `mqsec acl add sensor allow publish "sensors/%u/#"`')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .action(async (role: string, allow: string, action: string, filter: string, o: { data: string }) => {
        const a = parseRule(allow, action);
        await withRegistry(o.data, (r) => r.addRule(role, a, filter));
        io.out(`role ${role}: allow ${a} ${filter}`);
      });
    acl
      .command('remove <role> <allow> <action> <filter>')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .action(async (role: string, allow: string, action: string, filter: string, o: { data: string }) => {
        const a = parseRule(allow, action);
        const removed = await withRegistry(o.data, (r) => r.removeRule(role, a, filter));
        if (!removed) throw new CliError(`role ${role} has no rule allow ${a} ${filter}`);
        io.out(`role ${role}: removed allow ${a} ${filter}`);
      });
  },
};
