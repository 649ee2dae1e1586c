/**
 * `mqsec sim --nodes 3 --cluster redis://... --db postgres://...`: the three
 * `mqsec broker --cluster` processes the run starts share one PostgreSQL
 * registry (not a SQLite file in their data directory). The devices exist
 * only in PostgreSQL (the run provisions them there), so every accepted
 * handshake is a node reading it; while the run goes on, the phase-2 tickets
 * the nodes write are rows of that database. Node 2 is killed with SIGKILL
 * and started again: its devices come back through phase 2 only (their
 * tickets are in the shared database), sent = verified, nothing lost.
 *
 * The run's database role needs a password (scram-sha-256 for that role in
 * pg_hba.conf, so a missing or wrong password is refused): given in the URL,
 * it reaches the nodes as PGPASSWORD, never on their command lines (which
 * every local user can read); given as PGPASSWORD, the run itself uses it.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { startCli } from '../helpers/cli-process.js';
import { hasRedis, startRedis, type RunningRedis } from '../helpers/redis.js';
import { hasPostgres, startPostgres, type RunningPostgres } from '../helpers/postgres.js';

const run = hasRedis() && hasPostgres() ? describe : describe.skip;

run('sim over broker nodes sharing a PostgreSQL registry', () => {
  let redis: RunningRedis;
  let pgServer: RunningPostgres;
  let db: string; // superuser, no password (trust): the test's own look into the database
  let userDb: string; // the run's role, without its password
  let userDbWithPassword: string;
  const password = `pw@${randomBytes(8).toString('hex')}`; // '@' is %40 in a URL: decoded on the way
  /** A fresh database owned by simuser (each run brings its own master key): its URL without the password. */
  const userDatabase = async (): Promise<string> => {
    const name = new URL(await pgServer.createDatabase()).pathname.slice(1);
    const admin = new pg.Client({ connectionString: db });
    await admin.connect();
    try {
      await admin.query(`ALTER DATABASE ${name} OWNER TO simuser`);
    } finally {
      await admin.end();
    }
    return `postgres://simuser@${pgServer.host}:${pgServer.port}/${name}`;
  };
  beforeAll(async () => {
    [redis, pgServer] = await Promise.all([startRedis(), startPostgres()]);
    db = await pgServer.createDatabase();
    const admin = new pg.Client({ connectionString: db });
    await admin.connect();
    try {
      await admin.query(`CREATE ROLE simuser LOGIN PASSWORD '${password}'`);
      // the first matching line wins: this role must give its password over TCP
      const hba = path.join(pgServer.dir, 'data', 'pg_hba.conf');
      writeFileSync(hba, `host all simuser 127.0.0.1/32 scram-sha-256\n${readFileSync(hba, 'utf8')}`);
      await admin.query('SELECT pg_reload_conf()');
    } finally {
      await admin.end();
    }
    userDb = await userDatabase();
    userDbWithPassword = userDb.replace('simuser@', `simuser:${encodeURIComponent(password)}@`);
    // the role is refused without its password (else the tests below would prove nothing)
    const anon = new pg.Client({ connectionString: userDb.replace('simuser@', 'simuser:wrong@') });
    await expect(anon.connect()).rejects.toThrow(/password authentication failed/);
    await anon.end().catch(() => {});
  }, 60_000);
  afterAll(async () => {
    await redis?.stop();
    await pgServer?.stop();
  }, 30_000);

  it('--nodes 3 --db postgres://USER:PASSWORD@...: the nodes read and write the shared database, the password in their environment, not on their command lines; kill -9 of node 2: phase 2 only, sent = verified, nothing lost', async () => {
    const env = { ...process.env };
    delete env.PGPASSWORD;
    const sim = startCli(['sim', '--nodes', '3', '--cluster', redis.url, '--db', userDbWithPassword, '--devices', '18', '--rate', '18', '--duration', '12', '--kill-node', '2@4', '--restart-after', '3', '--workers', '2', '--json'], { env });
    let done = false;
    const code = sim.exited.then((c) => ((done = true), c));
    // while the run goes on: the nodes' tickets (only a node writes one, at each handshake) in PostgreSQL
    let maxTickets = 0;
    let maxDevices = 0;
    const checked = new Set<number>(); // node PIDs whose command line was read
    const client = new pg.Client({ connectionString: userDb.replace('simuser@', 'mqsec@') }); // the run's database, as the superuser
    await client.connect();
    try {
      while (!done) {
        await new Promise((r) => setTimeout(r, 500));
        // "started 3 broker nodes: node1 mqtt://127.0.0.1:P pid N, ..."
        for (const m of sim.err().matchAll(/node\d+ mqtt:\/\/\S+ pid (\d+)/g)) {
          const pid = Number(m[1]);
          if (checked.has(pid)) continue;
          let cmdline: string;
          let environ: string;
          try {
            cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
            environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
          } catch {
            continue; // gone (the killed node)
          }
          const argv = cmdline.split('\0');
          expect(argv[argv.indexOf('--db') + 1]).toBe(userDb);
          expect(cmdline).not.toContain(password);
          expect(cmdline).not.toContain(encodeURIComponent(password));
          expect(environ.split('\0')).toContain(`PGPASSWORD=${password}`);
          checked.add(pid);
        }
        try {
          const t = await client.query<{ n: string }>('SELECT count(*) AS n FROM tickets');
          const d = await client.query<{ n: string }>("SELECT count(*) AS n FROM devices WHERE role = 'sensor'");
          maxTickets = Math.max(maxTickets, Number(t.rows[0]!.n));
          maxDevices = Math.max(maxDevices, Number(d.rows[0]!.n));
        } catch {
          /* the schema is created by the run: not there yet */
        }
      }
      expect(await code, sim.err()).toBe(0);
      const line = sim.out().trim().split('\n').at(-1)!;
      const r = JSON.parse(line) as { sent: number; verified: number; lost: number; phase1_ok: number; errors: number; detail: { errors_by_code: Record<string, number>; reconnects: { phase1: number; phase2: number }; nodes: { kills: number; restarts: number }; connected_at_end: number } };
      expect(checked.size).toBeGreaterThanOrEqual(3);
      expect(maxDevices).toBe(18);
      expect(maxTickets).toBeGreaterThanOrEqual(18); // at least one ticket per device, written by the nodes into PostgreSQL
      expect(r.phase1_ok).toBeGreaterThanOrEqual(18);
      expect(r.lost, line).toBe(0);
      expect(r.sent).toBeGreaterThan(50);
      expect(r.verified).toBe(r.sent);
      expect(r.detail.connected_at_end).toBe(18);
      expect(r.detail.nodes).toMatchObject({ kills: 1, restarts: 1 });
      expect(r.detail.reconnects.phase1).toBe(0);
      expect(r.detail.reconnects.phase2).toBeGreaterThan(18);
      // device-side errors (in worker threads here) keep the code the node reported
      expect(Object.values(r.detail.errors_by_code).reduce((x, y) => x + y, 0)).toBe(r.errors);
      expect(Object.keys(r.detail.errors_by_code).filter((k) => !/^[A-Z][A-Z_0-9]+( \(gave up\))?$/.test(k))).toEqual([]);
      console.log(`errors by code: ${JSON.stringify(r.detail.errors_by_code)}`);
      // the run removes what it added to the operator's registry
      const after = await client.query<{ n: string }>("SELECT count(*) AS n FROM devices WHERE role = 'sensor'");
      expect(Number(after.rows[0]!.n)).toBe(0);
    } finally {
      await client.end();
    }
  }, 120_000);

  it('--db URL without a password, PGPASSWORD set: the run and its node use it', async () => {
    const userDb = await userDatabase();
    const sim = startCli(['sim', '--nodes', '1', '--cluster', redis.url, '--db', userDb, '--devices', '3', '--rate', '6', '--duration', '3', '--workers', '1', '--json'], { env: { ...process.env, PGPASSWORD: password } });
    expect(await sim.exited, sim.err()).toBe(0);
    const r = JSON.parse(sim.out().trim().split('\n').at(-1)!) as { sent: number; verified: number; lost: number };
    expect(r.sent).toBeGreaterThan(0);
    expect(r.verified).toBe(r.sent);
    expect(r.lost).toBe(0);
    // it is PGPASSWORD the run uses: a wrong one is refused by the database, and the run says so
    const refused = startCli(['sim', '--nodes', '1', '--cluster', redis.url, '--db', userDb, '--devices', '1', '--duration', '1'], { env: { ...process.env, PGPASSWORD: 'wrong' } });
    expect(await refused.exited).toBe(1);
    expect(refused.err()).toMatch(/password authentication failed/);
  }, 60_000);

  it('--db needs nodes or an external broker, and a postgres:// URL', async () => {
    const alone = startCli(['sim', '--devices', '1', '--db', db, '--duration', '1']);
    expect(await alone.exited).toBe(1);
    expect(alone.err()).toMatch(/--db goes with --broker, --brokers or --nodes/);
    const bad = startCli(['sim', '--nodes', '1', '--cluster', redis.url, '--db', 'mysql://x@127.0.0.1/db', '--devices', '1', '--duration', '1']);
    expect(await bad.exited).toBe(1);
    expect(bad.err()).toMatch(/--db must be a postgres:\/\//);
  });
});
