/**
 * The active lock of key service replicas (broker/keyservice/active-lock.ts,
 * docs/protocol.md §14.13) against a real PostgreSQL: one holder at a time,
 * a standby gets it when the holder releases it or its session is ended,
 * and a holder whose heartbeats go unanswered (its server backend frozen
 * with SIGSTOP, the connection still open) steps down by itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { ACTIVE_LOCK_KEY, ActiveLock } from '../../broker/keyservice/active-lock.js';
import { hasPostgres, startPostgres, type RunningPostgres } from '../helpers/postgres.js';
import { waitFor } from './helpers.js';

describe.skipIf(!hasPostgres())('key service active lock', () => {
  let server: RunningPostgres;
  let url = '';
  let admin: pg.Client;
  beforeAll(async () => {
    server = await startPostgres();
    url = await server.createDatabase();
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
  }, 60_000);
  afterAll(async () => {
    await admin?.end();
    await server?.stop();
  });
  const holderPid = async () =>
    (await admin.query<{ pid: number }>("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1", [ACTIVE_LOCK_KEY & 0xffffffff])).rows[0]?.pid;

  it('one holder; the standby gets the lock when the holder releases it, and when its session is ended', async () => {
    const first = await ActiveLock.acquire({ url });
    let standbyTold = 0;
    let second: ActiveLock | undefined;
    const waiting = ActiveLock.acquire({ url, onStandby: () => standbyTold++ }).then((l) => (second = l));
    await waitFor(() => standbyTold === 1, 5000, 'the second waits');
    await new Promise((r) => setTimeout(r, 300));
    expect(second).toBeUndefined();
    await first.release();
    await waiting;
    expect(second).toBeDefined();
    // the holder's session ended by the server (as when its process dies): it learns, a third gets the lock
    let lost = '';
    second!.onLost((why) => (lost = why));
    let third: ActiveLock | undefined;
    const waiting3 = ActiveLock.acquire({ url }).then((l) => (third = l));
    await new Promise((r) => setTimeout(r, 200));
    expect(third).toBeUndefined();
    await admin.query('SELECT pg_terminate_backend($1)', [await holderPid()]);
    await waiting3;
    await waitFor(() => lost !== '', 5000, 'the old holder learns it lost the lock');
    await third!.release();
  });

  it('a holder whose heartbeats go unanswered steps down by itself; the server-side timeout must exceed the step-down time', async () => {
    // the server ends a silent holder's session only after the holder has stopped answering (§14.13)
    await expect(ActiveLock.acquire({ url, heartbeatMs: 1000, stepDownMs: 5000, serverTimeoutMs: 5500 })).rejects.toThrow(/must exceed/);
    const lock = await ActiveLock.acquire({ url, heartbeatMs: 100, stepDownMs: 800, serverTimeoutMs: 5000 });
    let lost = '';
    lock.onLost((why) => (lost = why));
    const pid = (await holderPid())!;
    process.kill(pid, 'SIGSTOP'); // the backend freezes: the connection stays open, nothing answers
    try {
      await waitFor(() => lost !== '', 5000, 'step-down');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(lost).toMatch(/no answer from PostgreSQL|heartbeat/);
    await admin.query('SELECT pg_terminate_backend($1)', [pid]).catch(() => {});
  });
});
