/** `mqsec group list|rotate`: the end-to-end topic groups (docs/protocol.md §14) the policy makes, and operator rotation. */
import type { Principal } from '../../broker/policy/policy.js';
import { computeMembership, type Membership } from '../../broker/keyservice/membership.js';
import type { Registry } from '../../broker/registry/registry.js';
import { CliError, DEFAULT_DATA_DIR, type CommandModule } from '../command.js';
import { withRegistry } from './shared.js';

/** Groups and members as the broker and the key service compute them from this registry's policy. */
async function membershipOf(r: Registry): Promise<Membership> {
  const [roles, devices] = await Promise.all([r.listRoles(), r.listDevices()]);
  const byName = new Map(roles.map((x) => [x.name, x]));
  const principals: Principal[] = [];
  for (const d of devices) {
    const role = byName.get(d.role);
    if (d.status === 'active' && role) principals.push({ id: d.id, kind: 'device', role });
  }
  return computeMembership(principals, roles);
}

export const groupCommand: CommandModule = {
  name: 'group',
  register(program, io) {
    const group = program.command('group').description('end-to-end topic groups: list them, rotate one (new epoch, new key)');
    group
      .command('list')
      .description('groups with their writers and readers, from the policy')
      .option('--data <dir>', "the broker's data directory", DEFAULT_DATA_DIR)
      .option('--json', 'JSON output')
      .action(async (o: { data: string; json?: boolean }) => {
        const m = await withRegistry(o.data, membershipOf, { create: false });
        const list = [...m.groups.values()];
        if (o.json) io.out(JSON.stringify({ groups: list, overlapping: m.overlapping }));
        else for (const g of list) io.out(`${g.filter.padEnd(32)} writers: ${g.writers.join(',') || '-'}  readers: ${g.readers.join(',') || '-'}`);
        for (const f of o.json ? [] : m.overlapping) io.err(`warning: e2e filter ${f} overlaps an earlier group and is not a group`);
      });
    group
      .command('rotate <filter>')
      .description('move one group to a new epoch now (a running broker hands it to the key service within a second; connected members get the new key)')
      .option('--data <dir>', "the broker's data directory", DEFAULT_DATA_DIR)
      .action(async (filter: string, o: { data: string }) => {
        await withRegistry(
          o.data,
          async (r) => {
            if (!(await membershipOf(r)).groups.has(filter)) throw new CliError(`no end-to-end group "${filter}" (see \`mqsec group list\`)`);
            await r.rotateGroup(filter);
          },
          { create: false },
        );
        io.out(`group ${filter}: rotation requested`);
      });
  },
};
