/** `mqsec acl add|remove ROLE allow publish|subscribe FILTER`. */
import { CliError, DEFAULT_DATA_DIR, type CommandModule } from '../command.js';
import type { Action } from '../../broker/policy/policy.js';
import { withRegistry, DB_OPTION_HELP } from './shared.js';

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
      .description('add a rule (or change its protection mode), e.g. `mqsec acl add sensor allow publish "sensors/%u/#" --mode e2e`')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--db <url>', DB_OPTION_HELP)
      .option('--mode <mode>', 'payload protection on these topics: hop (sealed hop by hop, the broker re-seals) or e2e (group keys end to end)', 'hop')
      .action(async (role: string, allow: string, action: string, filter: string, o: { data: string; db?: string; mode: string }) => {
        const a = parseRule(allow, action);
        if (o.mode !== 'hop' && o.mode !== 'e2e') throw new CliError(`--mode must be hop or e2e, not "${o.mode}"`);
        const mode = o.mode;
        await withRegistry(o, (r) => r.addRule(role, a, filter, mode));
        io.out(`role ${role}: allow ${a} ${filter}${mode === 'e2e' ? ' (end to end)' : ''}`);
      });
    acl
      .command('remove <role> <allow> <action> <filter>')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--db <url>', DB_OPTION_HELP)
      .action(async (role: string, allow: string, action: string, filter: string, o: { data: string; db?: string }) => {
        const a = parseRule(allow, action);
        const removed = await withRegistry(o, (r) => r.removeRule(role, a, filter));
        if (!removed) throw new CliError(`role ${role} has no rule allow ${a} ${filter}`);
        io.out(`role ${role}: removed allow ${a} ${filter}`);
      });
  },
};
