/**
 * `mqsec broker --config FILE` and `mqsec keyservice --config FILE`
 * (docs/operations.md "Configuration file"; one mechanism, cli/config-file.ts):
 *
 * - In process, on the real `broker` command with its action replaced by one
 *   that records the options it gets: every flag of the command has its key,
 *   values go through the flag's own parser, the command line wins, relative
 *   paths are the file's, secrets come from {"env"} / {"file"} references,
 *   and an unknown key, a wrong type, an inline password, a missing variable
 *   and a secret file every user may read are one-line errors.
 * - As an operator runs it: `mqsec broker --config` starts on the registry in
 *   PostgreSQL whose URL is an environment variable, and a port taken in the
 *   file is overridden by `--port` on the command line; `mqsec keyservice
 *   --config` runs as a replica on the PostgreSQL state named by an
 *   environment variable, its data directory and password file relative to
 *   the file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { Command } from 'commander';
import pg from 'pg';
import { brokerCommand } from '../../cli/commands/broker.js';
import { keyserviceCommand } from '../../cli/commands/keyservice.js';
import { CliError, type CliIo, type CommandModule } from '../../cli/command.js';
import { urlHasPassword } from '../../cli/config-file.js';
import { startCli } from '../helpers/cli-process.js';
import { hasPostgres, startPostgres, type RunningPostgres } from '../helpers/postgres.js';
import { tempDir, waitFor } from './helpers.js';

const silent: CliIo = { out: () => {}, err: () => {}, readStdin: async () => '' };

/** Parses `mqsec NAME ARGS` with the real option definitions and config hook; returns the options the action would get. */
async function commandOptions(module: CommandModule, args: string[]): Promise<Record<string, unknown>> {
  const program = new Command().exitOverride();
  module.register(program, silent);
  const cmd = program.commands.find((c) => c.name() === module.name)!;
  cmd.exitOverride();
  let got: Record<string, unknown> | undefined;
  cmd.action((o: Record<string, unknown>) => {
    got = o;
  });
  await program.parseAsync(['node', 'mqsec', module.name, ...args]);
  return got!;
}
const brokerOptions = (args: string[]) => commandOptions(brokerCommand, args);
const keyserviceOptions = (args: string[]) => commandOptions(keyserviceCommand, args);

/** The long flags (without dashes) of `mqsec NAME`, but --config. */
function flagsOf(module: CommandModule): string[] {
  const program = new Command();
  module.register(program, silent);
  return program.commands.find((c) => c.name() === module.name)!.options.map((o) => o.long!.slice(2)).filter((k) => k !== 'config');
}

const dir = tempDir('mqsec-config-');
let n = 0;
function configFile(content: unknown): string {
  const f = join(dir.path, `c${++n}.json`);
  writeFileSync(f, typeof content === 'string' ? content : JSON.stringify(content));
  return f;
}

afterAll(() => dir.remove());

describe('broker config file (in process)', () => {
  it('every flag of `mqsec broker` has its key; values are parsed as the flags are', async () => {
    const program = new Command();
    brokerCommand.register(program, silent);
    const flags = program.commands.find((c) => c.name() === 'broker')!.options.map((o) => o.long!.slice(2)).filter((k) => k !== 'config');
    // one value per flag, of the flag's kind
    const values: Record<string, unknown> = {
      data: '/var/lib/mqsec', db: { env: 'MQSEC_TEST_DB' }, port: 1884, host: '0.0.0.0', 'metrics-port': '9100', 'log-level': 'debug',
      'console-port': 8080, 'console-host': '127.0.0.1', 'console-cert': '/c.pem', 'console-key': '/k.pem', 'console-tls': true,
      'tls-port': 8883, 'tls-host': '0.0.0.0', 'tls-cert': '/t.pem', 'tls-key': '/tk.pem', 'tls-name': 'mqtt.example.org',
      'allow-plain-accounts': false, 'local-addresses': '10.0.0.0/8', keyservice: 'external', 'use-username-as-clientid': true,
      cluster: 'redis://10.0.0.5:6379', 'node-id': 'node-a', 'retained-per-account': 7, 'retained-bytes-per-account': 7000,
      'retained-total': 70, 'retained-bytes-total': 70000,
    };
    expect(Object.keys(values).sort()).toEqual([...flags].sort()); // a new flag must be added here (and works in the file at once)
    process.env.MQSEC_TEST_DB = 'postgres://mqsec:from-env@db.example.org/mqsec';
    try {
      const o = await brokerOptions(['--config', configFile(values)]);
      expect(o).toMatchObject({
        data: '/var/lib/mqsec', db: 'postgres://mqsec:from-env@db.example.org/mqsec', port: '1884', host: '0.0.0.0', metricsPort: '9100', logLevel: 'debug',
        consolePort: '8080', consoleTls: true, tlsPort: '8883', tlsName: 'mqtt.example.org', localAddresses: '10.0.0.0/8', keyservice: 'external',
        useUsernameAsClientid: true, cluster: 'redis://10.0.0.5:6379', nodeId: 'node-a',
        // through the flags' own parsers: numbers, not strings
        retainedPerAccount: 7, retainedBytesPerAccount: 7000, retainedTotal: 70, retainedBytesTotal: 70000,
      });
      expect(o.allowPlainAccounts).toBeUndefined(); // false: the switch stays off
    } finally {
      delete process.env.MQSEC_TEST_DB;
    }
  });

  it('flags on the command line win over the file; defaults apply to keys the file leaves out', async () => {
    const f = configFile({ port: 1884, 'retained-total': 70, 'node-id': 'from-file' });
    const o = await brokerOptions(['--config', f, '--port', '1999', '--node-id', 'from-flag']);
    expect(o).toMatchObject({ port: '1999', nodeId: 'from-flag', retainedTotal: 70, host: '127.0.0.1', logLevel: 'info' });
    expect((await brokerOptions(['--port', '1999'])).retainedTotal).not.toBe(70); // no file: defaults
  });

  it('relative paths are taken from the file\'s directory; secrets from {"file"} references', async () => {
    const sub = join(dir.path, 'etc');
    mkdirSync(sub);
    const secret = join(sub, 'db-url');
    writeFileSync(secret, 'postgres://mqsec:from-file@db.example.org/mqsec\n', { mode: 0o600 });
    const f = join(sub, 'broker.json');
    writeFileSync(f, JSON.stringify({ data: 'state', 'tls-cert': '/abs/cert.pem', 'tls-key': 'tls/key.pem', 'tls-port': 8883, db: { file: 'db-url' } }));
    const o = await brokerOptions(['--config', f]);
    expect(o).toMatchObject({ data: join(sub, 'state'), tlsCert: '/abs/cert.pem', tlsKey: join(sub, 'tls', 'key.pem'), db: 'postgres://mqsec:from-file@db.example.org/mqsec' });
  });

  it('unknown key, wrong type, bad value, inline password, missing variable, readable secret file, bad JSON: one-line errors naming the file and key', async () => {
    const refused = async (content: unknown, pattern: RegExp) => {
      const f = configFile(content);
      const e = await brokerOptions(['--config', f]).then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(CliError);
      const msg = (e as Error).message;
      expect(msg.split('\n')).toHaveLength(1);
      expect(msg).toContain(f);
      expect(msg).toMatch(pattern);
      return msg;
    };
    expect(await refused({ prot: 1883 }, /unknown key "prot" \(known: allow-plain-accounts, cluster, .*\bport\b/)).not.toMatch(/"config"|, config,/);
    await refused({ config: 'other.json' }, /unknown key "config"/);
    await refused({ 'console-tls': 'yes' }, /"console-tls" is a switch: true or false/);
    await refused({ port: [1883] }, /"port" must be a string, a number, \{"env": "NAME"\} or \{"file": "PATH"\}/);
    await refused({ 'retained-total': -3 }, /"retained-total": --retained-total must be a whole number/);
    const pw = await refused({ db: 'postgres://mqsec:hunter2@db/mqsec' }, /"db" holds a password inline; give the URL as \{"env": "NAME"\} or \{"file": "PATH"\}/);
    expect(pw).not.toContain('hunter2');
    await refused({ cluster: 'redis://:hunter2@10.0.0.5:6379' }, /"cluster" holds a password inline/);
    await refused({ db: { env: 'MQSEC_TEST_UNSET_VARIABLE' } }, /"db" names the environment variable MQSEC_TEST_UNSET_VARIABLE, which is not set/);
    await refused({ db: { file: 'no-such-file' } }, /"db" names the file .*no-such-file, which cannot be read \(ENOENT\)/);
    const open = join(dir.path, 'readable-secret');
    writeFileSync(open, 'postgres://u:p@h/d');
    chmodSync(open, 0o644);
    await refused({ db: { file: open } }, /which every user may read/);
    await refused({ db: { env: 'X', file: 'y' } }, /must be a string, a number/);
    await refused('{"port": 1883,', /not valid JSON/);
    await refused('[1883]', /must be one JSON object/);
    const missing = await brokerOptions(['--config', join(dir.path, 'absent.json')]).then(() => undefined, (x: unknown) => x);
    expect((missing as Error).message).toMatch(/cannot read config .*absent\.json: ENOENT/);
  });

  it('every flag of `mqsec keyservice` (e2e and --flavour) has its key; --broker takes a list; secrets by {"env"} / {"file"}', async () => {
    const etc = join(dir.path, 'ks-etc');
    mkdirSync(etc);
    writeFileSync(join(etc, 'db-url'), 'postgres://ks:from-file@db.example.org/ks\n', { mode: 0o600 });
    const values: Record<string, unknown> = {
      broker: ['mqtt://10.0.0.1:1883', 'mqtts://10.0.0.2:8883'], data: 'ks-state', db: { file: 'db-url' }, 'journal-days': 30, username: 'ks-a',
      'password-file': 'ks.pw', ca: '/etc/ca.pem', 'rekey-interval': 3600, 'seq-block': 512, 'log-level': 'debug',
      flavour: 'http-auth', 'http-host': '0.0.0.0', 'http-port': 8090, management: 'http://10.0.0.3:15672',
    };
    expect(Object.keys(values).sort()).toEqual(flagsOf(keyserviceCommand).sort()); // a new flag must be added here
    const f = join(etc, 'keyservice.json');
    writeFileSync(f, JSON.stringify(values));
    expect(await keyserviceOptions(['--config', f])).toMatchObject({
      broker: ['mqtt://10.0.0.1:1883', 'mqtts://10.0.0.2:8883'], data: join(etc, 'ks-state'), db: 'postgres://ks:from-file@db.example.org/ks', journalDays: 30, username: 'ks-a',
      passwordFile: join(etc, 'ks.pw'), ca: '/etc/ca.pem', rekeyInterval: 3600, seqBlock: 512, logLevel: 'debug',
      flavour: 'http-auth', httpHost: '0.0.0.0', httpPort: 8090, management: 'http://10.0.0.3:15672',
    });
    // one broker as a string; `-` (stdin) is no path; the command line wins; an env reference
    process.env.MQSEC_TEST_KS_DB = 'postgres://ks:from-env@db.example.org/ks';
    try {
      const g = configFile({ broker: 'mqtt://10.0.0.1:1883', 'password-file': '-', db: { env: 'MQSEC_TEST_KS_DB' }, 'seq-block': 512 });
      expect(await keyserviceOptions(['--config', g, '--seq-block', '64'])).toMatchObject({ broker: ['mqtt://10.0.0.1:1883'], passwordFile: '-', db: 'postgres://ks:from-env@db.example.org/ks', seqBlock: 64, username: 'keyservice' });
    } finally {
      delete process.env.MQSEC_TEST_KS_DB;
    }
    // the same refusals as the broker's
    const inline = configFile({ db: 'postgres://ks:hunter2@db/ks' });
    const e = await keyserviceOptions(['--config', inline]).then(() => undefined, (x: unknown) => x);
    expect((e as Error).message).toMatch(/"db" holds a password inline/);
    expect((e as Error).message).not.toContain('hunter2');
    const typo = await keyserviceOptions(['--config', configFile({ brokr: 'mqtt://h:1883' })]).then(() => undefined, (x: unknown) => x);
    expect((typo as Error).message).toMatch(/unknown key "brokr" \(known: broker, ca, data, db, flavour, http-host, http-port, journal-days, log-level, management, password-file, rekey-interval, seq-block, username\)/);
    const zero = await keyserviceOptions(['--config', configFile({ 'seq-block': 0 })]).then(() => undefined, (x: unknown) => x);
    expect((zero as Error).message).toMatch(/"seq-block": --seq-block must be/);
    expect((await keyserviceOptions(['--config', configFile({ 'rekey-interval': [60, 120] })]).then(() => undefined, (x: unknown) => x) as Error).message).toMatch(/"rekey-interval" must be a string, a number/);
  });

  it('a password in a URL is told apart from a user name or a port', () => {
    expect(urlHasPassword('postgres://mqsec:pw@h/db')).toBe(true);
    expect(urlHasPassword('redis://:pw@h:6379')).toBe(true);
    expect(urlHasPassword('postgres://mqsec@h:5432/db')).toBe(false);
    expect(urlHasPassword('postgres://mqsec:@h/db')).toBe(false);
    expect(urlHasPassword('redis://h:6379')).toBe(false);
    expect(urlHasPassword('postgres://h/db?user=a@b')).toBe(false);
  });
});

const pgRun = hasPostgres() ? describe : describe.skip;

pgRun('broker config file (as an operator runs it)', () => {
  let server: RunningPostgres;
  let url: string;
  beforeAll(async () => {
    server = await startPostgres();
    url = await server.createDatabase();
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
  });

  it('`mqsec broker --config` opens the PostgreSQL registry named by an environment variable; --port on the command line wins over a taken port in the file', async () => {
    // a port held by someone else: the file's value would fail
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const taken = (holder.address() as net.AddressInfo).port;
    try {
      const etc = join(dir.path, 'op');
      mkdirSync(etc);
      const f = join(etc, 'broker.json');
      writeFileSync(f, JSON.stringify({ data: 'state', db: { env: 'MQSEC_DB_URL' }, port: taken, 'log-level': 'warn' }));
      const env = { ...process.env, MQSEC_DB_URL: url };

      const clash = startCli(['broker', '--config', f], { cwd: dir.path, env });
      expect(await clash.exited).not.toBe(0); // the file's port: taken
      expect(clash.err()).toMatch(/EADDRINUSE|in use/);

      const broker = startCli(['broker', '--config', f, '--port', '0'], { cwd: dir.path, env });
      try {
        await waitFor(() => /listening on mqtt:\/\/127\.0\.0\.1:\d+/.test(broker.out()) || broker.child.exitCode !== null, 30_000, 'broker start');
        expect(broker.out(), broker.err()).toMatch(/listening on mqtt:\/\/127\.0\.0\.1:(\d+)/);
        expect(Number(/127\.0\.0\.1:(\d+)/.exec(broker.out())![1])).not.toBe(taken);
        // the data directory is the file's (relative to it), and the registry is in PostgreSQL, not SQLite there
        expect(existsSync(join(etc, 'state', 'master.key'))).toBe(true);
        expect(existsSync(join(etc, 'state', 'registry.db'))).toBe(false);
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        try {
          expect((await c.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'devices'")).rows[0].n).toBe('1');
        } finally {
          await c.end();
        }
      } finally {
        broker.child.kill('SIGTERM');
        await broker.exited;
      }
    } finally {
      holder.close();
    }
  }, 60_000);

  it('`mqsec keyservice --config` runs on the PostgreSQL state named by an environment variable, data directory and password file relative to the file', async () => {
    const etc = join(dir.path, 'ks-op');
    mkdirSync(etc);
    writeFileSync(join(etc, 'ks.pw'), 'not-used-until-linked\n', { mode: 0o600 });
    // a broker port nobody listens on: the replica becomes active and keeps trying to link
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const closed = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const f = join(etc, 'keyservice.json');
    writeFileSync(f, JSON.stringify({ broker: [`mqtt://127.0.0.1:${closed}`], data: 'ks-state', db: { env: 'MQSEC_KS_DB_URL' }, 'password-file': 'ks.pw', 'log-level': 'silent' }));
    const ksDb = await server.createDatabase();
    const ks = startCli(['keyservice', '--config', f], { cwd: dir.path, env: { ...process.env, MQSEC_KS_DB_URL: ksDb } });
    try {
      await waitFor(() => /key service active/.test(ks.out()) || ks.child.exitCode !== null, 30_000, 'key service replica active');
      expect(ks.out(), ks.err()).toContain(`mqsec key service active: linking to mqtt://127.0.0.1:${closed}`);
      expect(existsSync(join(etc, 'ks-state', 'keyservice.key'))).toBe(true);
      const c = new pg.Client({ connectionString: ksDb });
      await c.connect();
      try {
        expect(Number((await c.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'public'")).rows[0].n)).toBeGreaterThan(0);
      } finally {
        await c.end();
      }
    } finally {
      ks.child.kill('SIGTERM');
      await ks.exited;
    }
  }, 60_000);
});
