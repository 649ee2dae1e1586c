/**
 * The PostgreSQL test helper (test/helpers/postgres.ts): a real server in a
 * temp dir on a free port, fresh databases, a pause the clients notice, a
 * resume on the same port with the data kept, and a stop that leaves no
 * process and no directory behind.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import pg from 'pg';
import { startPostgres, type RunningPostgres } from '../helpers/postgres.js';

describe('PostgreSQL test helper', () => {
  let server: RunningPostgres | undefined;
  afterAll(async () => server?.stop());

  it('starts, creates databases, pauses and resumes with data kept, stops by PID and removes its dir', async () => {
    server = await startPostgres();
    const url = await server.createDatabase();
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query('CREATE TABLE t (v INTEGER)');
    await c.query('INSERT INTO t VALUES (42)');
    expect((await c.query('SELECT current_user AS u')).rows[0].u).toBe('mqsec');
    const lost = new Promise((r) => c.once('error', r));
    c.on('error', () => {});
    await server.pause();
    await lost; // the client notices the server is gone
    await expect(new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 }).connect()).rejects.toThrow();
    await server.resume();
    const c2 = new pg.Client({ connectionString: url });
    await c2.connect();
    expect((await c2.query('SELECT v FROM t')).rows).toEqual([{ v: 42 }]);
    await c2.end();
    const pid = server.pid()!;
    const dir = server.dir;
    await server.stop();
    server = undefined;
    expect(() => process.kill(pid, 0)).toThrow();
    expect(existsSync(dir)).toBe(false);
  }, 60_000);
});
