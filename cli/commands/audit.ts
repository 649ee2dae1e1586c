/** `mqsec audit`: the registry's audit log (auth failures, drops, admin actions). */
import { DEFAULT_DATA_DIR, wholeNumber, type CommandModule } from '../command.js';
import { withRegistry, DB_OPTION_HELP } from './shared.js';

export const auditCommand: CommandModule = {
  name: 'audit',
  register(program, io) {
    program
      .command('audit')
      .description('show the newest audit log entries')
      .option('--data <dir>', 'data directory', DEFAULT_DATA_DIR)
      .option('--db <url>', DB_OPTION_HELP)
      .option('--limit <n>', 'entries', wholeNumber('--limit', 1, 100_000), 50)
      .option('--kind <kind>', 'only this kind (e.g. auth.fail, publish.drop, device.revoke)')
      .option('--json', 'JSON output')
      .action(async (o: { data: string; db?: string; limit: number; kind?: string; json?: boolean }) => {
        const rows = await withRegistry(o, (r) => r.listAudit({ limit: o.limit, kind: o.kind }), { create: false });
        if (o.json) return io.out(JSON.stringify(rows));
        for (const a of rows) {
          io.out(`${new Date(a.at).toISOString()} ${a.kind.padEnd(16)} ${(a.subject ?? '-').padEnd(24)} ${a.detail ?? ''} ${a.source ? `[${a.source}]` : ''}`.trimEnd());
        }
      });
  },
};
