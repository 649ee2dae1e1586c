/**
 * `mqsec sim --nodes 3 --cluster redis://... --db postgres://...`: the three
 * `mqsec broker --cluster` processes the run starts share one PostgreSQL
 * registry (not a SQLite file in their data directory). The devices exist
 * only in PostgreSQL (the run provisions them there), so every accepted
 * handshake is a node reading it; while the run goes on, the phase-2 tickets
 * the nodes write are rows of that database. Node 2 is killed with SIGKILL
 * and started again: its devices come back through phase 2 only (their
 * tickets are in the shared database), sent = verified, nothing lost.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { startCli } from '../helpers/cli-process.js';
import { hasRedis, startRedis, type RunningRedis } from '../helpers/redis.js';
import { hasPostgres, startPostgres, type RunningPostgres } from '../helpers/postgres.js';

const run = hasRedis() && hasPostgres() ? describe : describe.skip;

run('sim over broker nodes sharing a PostgreSQL registry', () => {
  let redis: RunningRedis;
  let pgServer: RunningPostgres;
  let db: string;
  beforeAll(async () => {
    [redis, pgServer] = await Promise.all([startRedis(), startPostgres()]);
    db = await pgServer.createDatabase();
  }, 60_000);
  afterAll(async () => {
    await redis?.stop();
    await pgServer?.stop();
  }, 30_000);

  it('--nodes 3 --db postgres://: the nodes read and write the shared database; kill -9 of node 2: phase 2 only, sent = verified, nothing lost', async () => {
    const sim = startCli(['sim', '--nodes', '3', '--cluster', redis.url, '--db', db, '--devices', '18', '--rate', '18', '--duration', '12', '--kill-node', '2@4', '--restart-after', '3', '--workers', '2', '--json']);
    let done = false;
    const code = sim.exited.then((c) => ((done = true), c));
    // while the run goes on: the nodes' tickets (only a node writes one, at each handshake) in PostgreSQL
    let maxTickets = 0;
    let maxDevices = 0;
    const client = new pg.Client({ connectionString: db });
    await client.connect();
    try {
      while (!done) {
        await new Promise((r) => setTimeout(r, 500));
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
      expect(maxDevices).toBe(18);
      expect(maxTickets).toBeGreaterThanOrEqual(18); // at least one ticket per device, written by the nodes into PostgreSQL
      expect(r.phase1_ok).toBeGreaterThanOrEqual(18);
      expect(r.lost).toBe(0);
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

  it('--db needs nodes or an external broker, and a postgres:// URL', async () => {
    const alone = startCli(['sim', '--devices', '1', '--db', db, '--duration', '1']);
    expect(await alone.exited).toBe(1);
    expect(alone.err()).toMatch(/--db goes with --broker, --brokers or --nodes/);
    const bad = startCli(['sim', '--nodes', '1', '--cluster', redis.url, '--db', 'mysql://x@127.0.0.1/db', '--devices', '1', '--duration', '1']);
    expect(await bad.exited).toBe(1);
    expect(bad.err()).toMatch(/--db must be a postgres:\/\//);
  });
});
