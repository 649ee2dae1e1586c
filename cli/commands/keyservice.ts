/**
 * `mqsec keyservice`: the key service of end-to-end topics (docs/protocol.md
 * §14) as its own process, an MQTT client of the mqsec broker; `account`
 * creates its login on the broker, `migrate` moves an embedded key service's
 * state out of the broker's data directory.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { KEYSERVICE_ROLE } from '../../broker/keyservice/link.js';
import { migrateToExternalKeyService } from '../../broker/keyservice/migrate.js';
import { startKeyServiceProcess, startKeyServiceReplica } from '../../broker/keyservice/mqtt-link.js';
import { replicaStatus } from '../../broker/keyservice/active-lock.js';
import { isPostgresStoreUrl } from '../../broker/keyservice/pg-store.js';
import { KeyStoreUnavailableError } from '../../broker/keyservice/store.js';
import { RegistryError } from '../../broker/registry/store.js';
import { redactUrl } from '../../broker/registry/pg-registry.js';
import { createSodiumSuite } from '../../platform-node/sodium-suite.js';
import { CliError, DEFAULT_DATA_DIR, wholeNumber, type CommandModule } from '../command.js';
import { applyConfigFile } from '../config-file.js';
import { EXIT_UNAVAILABLE, withRegistry } from './shared.js';
import { STOCK_FLAVOURS, runStockKeyService, type StockFlavourName } from './keyservice-stock.js';

/** Options of `mqsec keyservice` that name files or directories: relative ones in a config file are taken from its directory. */
const KEYSERVICE_PATH_OPTIONS = ['data', 'password-file', 'ca'];

export const keyserviceCommand: CommandModule = {
  name: 'keyservice',
  register(program, io) {
    // `keyservice` has options of its own and sub-commands with the same names (--data)
    program.enablePositionalOptions();
    const ks = program
      .command('keyservice')
      .enablePositionalOptions()
      .description('run the key service of end-to-end topics as its own process, linked to an mqsec broker started with --keyservice external')
      .option('--config <file>', 'JSON file of these options by flag name ({"broker": ["mqtt://a:1883", "mqtt://b:1883"], "db": {"env": "MQSEC_KS_DB"}, ...}); flags given here win; secrets as {"env": NAME} or {"file": PATH} (docs/operations.md "Configuration file")')
      // the file holds this command's options, not those of `keyservice account` / `migrate`
      .hook('preAction', (cmd, action) => {
        if (action === cmd) applyConfigFile(cmd, { paths: KEYSERVICE_PATH_OPTIONS, repeatable: ['broker'] });
      })
      .option('--broker <url>', 'the broker: mqtt://HOST:PORT (loopback) or mqtts://HOST:PORT; repeat it for every node of a cluster', (v: string, prev: string[] = []) => [...prev, v])
      .option('--data <dir>', "the key service's own data directory (never the broker's); with --db it holds keyservice.key (the same file on every replica) and this replica's lock", '.mqsec-keyservice')
      .option('--db <url>', 'keep the state in PostgreSQL (postgres://user@host:port/db) shared by replicas: one is active, the others take over when it dies (docs/protocol.md §14.13)')
      .option('--journal-days <n>', 'with --db: days the journal of handed-out epochs and sequence ranges is kept (one row per writer connection)', wholeNumber('--journal-days', 0, 3650), 7)
      .option('--username <name>', 'its account on the broker (see `mqsec keyservice account`)', 'keyservice')
      .option('--password-file <file>', 'file holding the account password (first line); with --flavour, - reads it from stdin')
      .option('--ca <file>', 'CA certificate (PEM) to trust for mqtts://')
      .option('--rekey-interval <seconds>', 'periodic re-key of every group', wholeNumber('--rekey-interval', 1), 24 * 3600)
      .option('--seq-block <n>', 'publisher sequence numbers handed out per connection', wholeNumber('--seq-block', 1, 1 << 21), 4096)
      .option('--log-level <level>', 'pino log level (logs go to stderr)', 'info')
      .option('--flavour <name>', `the broker: mqsec (default), or a stock broker (docs/protocol.md §15): ${STOCK_FLAVOURS.join(', ')}; then --data is the mqsec data directory devices are provisioned into`, 'mqsec')
      .option('--http-host <addr>', 'http-auth: address the broker reaches the HTTP checks on', '127.0.0.1')
      .option('--http-port <port>', 'http-auth: port of the HTTP checks (paths /auth/user, /auth/vhost, /auth/resource, /auth/topic)', wholeNumber('--http-port', 0, 65535), 8089)
      .option('--management <url>', "http-auth on RabbitMQ: the management API (http://HOST:15672); revocation closes the principal's live connections through it, logged in as --username")
      .action(async (o: { broker?: string[]; data: string; db?: string; journalDays: number; username: string; passwordFile?: string; ca?: string; rekeyInterval: number; seqBlock: number; logLevel: string; flavour: string; httpHost: string; httpPort: number; management?: string }) => {
        if (!o.broker?.length) throw new CliError('give the broker with --broker mqtt://HOST:PORT');
        if (o.flavour !== 'mqsec' && o.db !== undefined) throw new CliError('--db (replicas on PostgreSQL) is for the mqsec flavour only');
        if (o.flavour !== 'mqsec') {
          if (!(STOCK_FLAVOURS as readonly string[]).includes(o.flavour)) throw new CliError(`--flavour must be mqsec, ${STOCK_FLAVOURS.join(' or ')}`);
          if (o.broker.length > 1) throw new CliError(`--flavour ${o.flavour} links to one broker (give --broker once)`);
          if (!o.passwordFile) throw new CliError('give the broker login password with --password-file FILE (passwords never go on the command line)');
          let wakeStock: () => void = () => {};
          const stopStock = new Promise<void>((r) => (wakeStock = r));
          process.once('SIGINT', () => wakeStock());
          process.once('SIGTERM', () => wakeStock());
          // `--password-file -`: from stdin (never on the command line)
          const password = readFileSync(o.passwordFile === '-' ? 0 : o.passwordFile, 'utf8').split(/\r?\n/)[0] ?? '';
          await runStockKeyService({ flavour: o.flavour as StockFlavourName, broker: o.broker[0]!, data: o.data, username: o.username, password, httpHost: o.httpHost, httpPort: o.httpPort, logLevel: o.logLevel, management: o.management }, io, stopStock);
          return;
        }
        for (const b of o.broker) if (!/^mqtts?:\/\//.test(b)) throw new CliError('--broker must be mqtt://HOST:PORT or mqtts://HOST:PORT');
        if (!o.passwordFile) throw new CliError('give the account password with --password-file FILE (passwords never go on the command line)');
        const password = readFileSync(o.passwordFile, 'utf8').split(/\r?\n/)[0] ?? '';
        const log = pino({ level: o.logLevel, base: { svc: 'mqsec-keyservice' } }, pino.destination(2));
        if (o.db !== undefined) {
          if (!isPostgresStoreUrl(o.db)) throw new CliError('--db must be a postgres://user@host:port/database URL (without --db the state is SQLite in --data)');
          let wakeReplica: () => void = () => {};
          const stopReplica = new Promise<void>((r) => (wakeReplica = r));
          process.once('SIGINT', () => wakeReplica());
          process.once('SIGTERM', () => wakeReplica());
          const brokers = o.broker.join(', ');
          const replicaStore = redactUrl(o.db);
          let replica: Awaited<ReturnType<typeof startKeyServiceReplica>>;
          try {
            replica = await startKeyServiceReplica(
              { brokerUrls: o.broker, username: o.username, password, ca: o.ca ? readFileSync(o.ca) : undefined, dataDir: o.data, db: o.db, journalDays: o.journalDays, suite: createSodiumSuite(), log, rekeyIntervalMs: o.rekeyInterval * 1000, seqBlock: o.seqBlock },
              {
                standby: () => io.out(`mqsec key service standby: another replica is active (${replicaStore})`),
                active: (links) => {
                  io.out(`mqsec key service active: linking to ${brokers} (${replicaStore})`);
                  links.linked.then(() => io.out(`mqsec key service linked to ${brokers}`), (e: Error) => io.err(e.message));
                },
                lost: (why) => io.out(`mqsec key service stepped down (${why}): standby again`),
              },
            );
          } catch (e) {
            if (e instanceof KeyStoreUnavailableError) throw new CliError(e.message, EXIT_UNAVAILABLE);
            if (e instanceof RegistryError) throw new CliError(e.message);
            throw e;
          }
          try {
            await stopReplica;
          } finally {
            await replica.stop();
            log.flush();
          }
          io.out('mqsec key service stopped');
          return;
        }
        const running = startKeyServiceProcess({
          brokerUrls: o.broker,
          username: o.username,
          password,
          ca: o.ca ? readFileSync(o.ca) : undefined,
          dataDir: o.data,
          suite: createSodiumSuite(),
          log,
          rekeyIntervalMs: o.rekeyInterval * 1000,
          seqBlock: o.seqBlock,
        });
        let wake: () => void = () => {};
        const stop = new Promise<void>((r) => (wake = r));
        process.once('SIGINT', () => wake());
        process.once('SIGTERM', () => wake());
        try {
          await Promise.race([running.linked, stop]);
          io.out(`mqsec key service linked to ${o.broker.join(', ')} (data ${o.data})`);
          await stop;
        } finally {
          await running.stop();
          log.flush();
        }
        io.out('mqsec key service stopped');
      });

    ks.command('account')
      .description('create (or renew the password of) the key service account on the broker: role `keyservice`, random password written to a file (0600)')
      .option('--data <dir>', "the broker's data directory", DEFAULT_DATA_DIR)
      .option('--name <name>', 'account name', 'keyservice')
      .requiredOption('--password-file <file>', 'where to write the password (mode 0600)')
      .action(async (o: { data: string; name: string; passwordFile: string }) => {
        const password = randomBytes(32).toString('base64url');
        await withRegistry(o.data, async (r) => {
          if (!(await r.getRole(KEYSERVICE_ROLE))) await r.addRole(KEYSERVICE_ROLE);
          if (await r.getAccount(o.name)) await r.removeAccount(o.name);
          await r.addAccount(o.name, KEYSERVICE_ROLE, password);
        });
        writeFileSync(o.passwordFile, password + '\n', { mode: 0o600 });
        io.out(`account ${o.name} (role ${KEYSERVICE_ROLE}) ready; password written to ${o.passwordFile}`);
      });

    ks.command('status')
      .description('replicas on PostgreSQL: which one is active, which wait, and what the shared state holds')
      .requiredOption('--db <url>', 'the replicas\' PostgreSQL (postgres://user@host:port/db)')
      .option('--json', 'JSON output')
      .action(async (o: { db: string; json?: boolean }) => {
        if (!isPostgresStoreUrl(o.db)) throw new CliError('--db must be a postgres://user@host:port/database URL');
        let st: Awaited<ReturnType<typeof replicaStatus>>;
        try {
          st = await replicaStatus(o.db);
        } catch (e) {
          throw new CliError(`cannot reach ${redactUrl(o.db)}: ${(e as Error).message}`, EXIT_UNAVAILABLE);
        }
        if (o.json) return io.out(JSON.stringify(st));
        io.out(st.active ? `active: ${st.active.name} from ${st.active.address ?? 'local socket'} since ${st.active.since}` : 'active: none (no replica holds the lock)');
        io.out(`standbys: ${st.standbys.length ? st.standbys.map((s) => `${s.name} from ${s.address ?? 'local socket'}`).join(', ') : 'none'}`);
        io.out(`state: ${st.groups} group epochs, ${st.principals} sequence allocations, ${st.memberKeys} member keys; journal ${st.journal.rows} rows${st.journal.oldest ? ` since ${new Date(st.journal.oldest).toISOString()}` : ''}`);
      });

    ks.command('migrate')
      .description("move an embedded key service's state (epochs, sequence ranges, K_ks) out of a stopped broker's data directory into the key service's own; with --db, into PostgreSQL for replicas (also from a stopped key service's own directory)")
      .requiredOption('--from <dir>', "the broker's data directory (broker stopped), or with --db a key service's data directory (key service stopped)")
      .requiredOption('--data <dir>', "the key service's own data directory (with --db: where the replicas' keyservice.key is; it may be --from)")
      .option('--db <url>', 'move the state into PostgreSQL (postgres://user@host:port/db), for `mqsec keyservice --db` replicas')
      .action(async (o: { from: string; data: string; db?: string }) => {
        if (o.db !== undefined && !isPostgresStoreUrl(o.db)) throw new CliError('--db must be a postgres://user@host:port/database URL');
        let r: Awaited<ReturnType<typeof migrateToExternalKeyService>>;
        try {
          r = await migrateToExternalKeyService(o.from, o.data, { db: o.db });
        } catch (e) {
          if (e instanceof KeyStoreUnavailableError) throw new CliError(e.message, EXIT_UNAVAILABLE);
          throw new CliError((e as Error).message);
        }
        const where = o.db ? redactUrl(o.db) : o.data;
        io.out(`moved ${r.groups} group epochs and ${r.moved} member keys${r.source === 'broker' ? `, split ${r.split} stored principal keys` : ''} to ${where}; ${r.source === 'broker' ? "the broker's directory" : o.from} keeps no key service state`);
        const start = `mqsec keyservice --broker mqtt://HOST:PORT --data ${o.data}${o.db ? ` --db ${redactUrl(o.db)}` : ''} --password-file FILE`;
        io.out(r.source === 'broker' ? `start the broker with --keyservice external, then: ${start}` : `start the replicas: ${start}`);
      });
  },
};
