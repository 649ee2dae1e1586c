/**
 * `mqsec status --cluster redis://...`: the cluster view. Every broker node
 * announces itself in Redis every second (broker/cluster/redis-state.ts):
 * its id, address, pid, device and account sessions. A node not heard from
 * for three heartbeats is shown down (killed, or cut off from Redis); a node
 * that stopped cleanly has left the list.
 */
import { listNodes } from '../../broker/cluster/redis-state.js';
import { CliError, type CommandModule } from '../command.js';

export const statusCommand: CommandModule = {
  name: 'status',
  register(program, io) {
    program
      .command('status')
      .description('cluster view: broker nodes, up or down, device and account sessions per node')
      .requiredOption('--cluster <redis-url>', 'the Redis the nodes run over (redis://HOST:PORT[/DB])')
      .option('--json', 'JSON output')
      .action(async (o: { cluster: string; json?: boolean }) => {
        let nodes;
        try {
          nodes = await listNodes(o.cluster);
        } catch (e) {
          throw new CliError(`cannot read the cluster view from ${o.cluster}: ${(e as Error).message}`);
        }
        if (o.json) return io.out(JSON.stringify({ nodes }));
        if (nodes.length === 0) return io.out('no broker node has announced itself in this Redis');
        const up = nodes.filter((n) => n.up);
        io.out(`${up.length} of ${nodes.length} nodes up; ${up.reduce((s, n) => s + n.devices, 0)} device sessions, ${up.reduce((s, n) => s + n.accounts, 0)} account sessions`);
        io.out(`${'node'.padEnd(20)} ${'state'.padEnd(6)} ${'address'.padEnd(22)} ${'pid'.padStart(8)} ${'devices'.padStart(8)} ${'accounts'.padStart(8)}  last seen`);
        for (const n of nodes) {
          const seen = `${Math.max(0, Math.round((Date.now() - n.at) / 100) / 10)} s ago`;
          io.out(`${n.id.padEnd(20)} ${(n.up ? 'up' : 'down').padEnd(6)} ${`${n.host}:${n.port}`.padEnd(22)} ${String(n.pid).padStart(8)} ${String(n.devices).padStart(8)} ${String(n.accounts).padStart(8)}  ${seen}`);
        }
      });
  },
};
