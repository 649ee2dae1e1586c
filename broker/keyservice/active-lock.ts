/**
 * One active key service among replicas on the same PostgreSQL state
 * (docs/protocol.md §14.13): the active one holds a session-level advisory
 * lock on a connection of its own; standbys block on the same lock and get
 * it the moment PostgreSQL ends the holder's session.
 *
 * - A holder killed (kill -9, crash): the kernel closes its socket, the
 *   server ends the session at once and releases the lock.
 * - A holder cut off (network, frozen host): the session is ended by the
 *   server after `idle_session_timeout` (set on the lock connection to
 *   `serverTimeoutMs`); the holder heartbeats every `heartbeatMs` and steps
 *   down by itself when a heartbeat has not come back within `stepDownMs`,
 *   which is shorter, so it has stopped answering before a standby can take
 *   over (§14.13: never two active replicas drawing group keys).
 * - The lock connection failing in any way counts as lost.
 */
import pg from 'pg';
import { redactUrl } from '../registry/pg-registry.js';

/** The advisory lock key of the active key service ("mqska" in ASCII); the registry's migration lock is "mqsec". */
export const ACTIVE_LOCK_KEY = 0x6d71736b61;

export interface ActiveLockOptions {
  url: string;
  /** Shown as the lock connection's application_name (`mqsec keyservice status` names the active replica by it). */
  name?: string;
  /** Heartbeat period on the lock connection (default 1000 ms). */
  heartbeatMs?: number;
  /** A holder whose last heartbeat answer is older than this steps down (default 5000 ms). */
  stepDownMs?: number;
  /** The server ends a silent holder's session after this (default 15000 ms; must exceed stepDownMs). */
  serverTimeoutMs?: number;
  /** Called once when another replica holds the lock and this one starts waiting. */
  onStandby?(): void;
  /** Retries after a failed connection (PostgreSQL away) are logged here. */
  onRetry?(err: Error): void;
}

export class ActiveLock {
  private timer: NodeJS.Timeout | undefined;
  private lostCb: ((why: string) => void) | undefined;
  private done = false;

  private constructor(
    private readonly client: pg.Client,
    private readonly opts: Required<Pick<ActiveLockOptions, 'heartbeatMs' | 'stepDownMs'>>,
  ) {}

  /**
   * Waits until this process holds the lock (retrying while PostgreSQL cannot
   * be reached), or `signal` aborts (rejects).
   */
  static async acquire(o: ActiveLockOptions, signal?: AbortSignal): Promise<ActiveLock> {
    const heartbeatMs = o.heartbeatMs ?? 1000;
    const stepDownMs = o.stepDownMs ?? 5000;
    const serverTimeoutMs = o.serverTimeoutMs ?? 15_000;
    if (serverTimeoutMs <= stepDownMs + heartbeatMs) throw new Error('serverTimeoutMs must exceed stepDownMs + heartbeatMs');
    let toldStandby = false;
    for (;;) {
      if (signal?.aborted) throw new Error('stopped');
      const client = new pg.Client({ connectionString: o.url, keepAlive: true, connectionTimeoutMillis: 5000, application_name: (o.name ?? 'mqsec-keyservice').slice(0, 63) });
      client.on('error', () => {});
      const abort = () => void client.end().catch(() => {});
      signal?.addEventListener('abort', abort);
      try {
        await client.connect();
        // a holder that goes silent loses its session (and the lock) on the server's side
        await client.query(`SET idle_session_timeout = ${Math.round(serverTimeoutMs)}`).catch(() => {});
        const got = (await client.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1) AS got', [ACTIVE_LOCK_KEY])).rows[0]!.got;
        if (!got) {
          if (!toldStandby) o.onStandby?.();
          toldStandby = true;
          // blocks until the holder's session ends (not idle meanwhile: the timeout does not apply)
          await client.query('SELECT pg_advisory_lock($1)', [ACTIVE_LOCK_KEY]);
        }
        signal?.removeEventListener('abort', abort);
        if (signal?.aborted) {
          await client.end().catch(() => {});
          throw new Error('stopped');
        }
        const lock = new ActiveLock(client, { heartbeatMs, stepDownMs });
        lock.start();
        return lock;
      } catch (e) {
        signal?.removeEventListener('abort', abort);
        await client.end().catch(() => {});
        if (signal?.aborted) throw new Error('stopped');
        o.onRetry?.(new Error(`${redactUrl(o.url)}: ${(e as Error).message}`));
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  /** `cb` runs once when the lock is (or may be) lost: stop answering at once. */
  onLost(cb: (why: string) => void): void {
    this.lostCb = cb;
  }

  private start(): void {
    let lastAnswer = Date.now();
    let inFlight = false;
    this.client.on('error', (e) => this.lose(`lock connection error: ${e.message}`));
    this.client.on('end', () => this.lose('lock connection ended'));
    this.timer = setInterval(() => {
      if (Date.now() - lastAnswer > this.opts.stepDownMs) return this.lose(`no answer from PostgreSQL for ${this.opts.stepDownMs} ms`);
      if (inFlight) return;
      inFlight = true;
      this.client.query('SELECT 1').then(
        () => ((lastAnswer = Date.now()), (inFlight = false)),
        (e: Error) => this.lose(`heartbeat failed: ${e.message}`),
      );
    }, this.opts.heartbeatMs);
  }

  private lose(why: string): void {
    if (this.done) return;
    this.done = true;
    clearInterval(this.timer);
    void this.client.end().catch(() => {});
    this.lostCb?.(why);
  }

  /** Gives the lock up (orderly stop): a standby takes over at once. */
  async release(): Promise<void> {
    if (this.done) return;
    this.done = true;
    clearInterval(this.timer);
    await this.client.query('SELECT pg_advisory_unlock($1)', [ACTIVE_LOCK_KEY]).catch(() => {});
    await this.client.end().catch(() => {});
  }
}

export interface ReplicaStatus {
  /** The replica holding the lock (its lock connection's application_name, address, since when), or none. */
  active?: { name: string; address: string | null; since: string };
  /** Replicas waiting for the lock. */
  standbys: { name: string; address: string | null }[];
  groups: number;
  principals: number;
  memberKeys: number;
  journal: { rows: number; oldest: number | null };
}

/** What `mqsec keyservice status --db` shows: who is active, who waits, and the size of the shared state (no key needed). */
export async function replicaStatus(url: string): Promise<ReplicaStatus> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, application_name: 'mqsec-keyservice-status' });
  c.on('error', () => {});
  await c.connect();
  try {
    // a bigint advisory key is kept as classid (high 32 bits) and objid (low 32 bits)
    const holders = (
      await c.query<{ granted: boolean; name: string; address: string | null; since: Date }>(
        `SELECT l.granted, a.application_name AS name, host(a.client_addr) AS address, a.backend_start AS since
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1`,
        [Math.floor(ACTIVE_LOCK_KEY / 2 ** 32), ACTIVE_LOCK_KEY % 2 ** 32],
      )
    ).rows;
    const count = async (table: string) => Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`)).rows[0]!.n);
    const exists = (await c.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'ks_journal'")).rowCount === 1;
    const active = holders.find((h) => h.granted);
    const j = exists ? (await c.query<{ n: string; oldest: string | null }>('SELECT count(*) AS n, min(at) AS oldest FROM ks_journal')).rows[0]! : { n: '0', oldest: null };
    return {
      active: active && { name: active.name, address: active.address, since: active.since.toISOString() },
      standbys: holders.filter((h) => !h.granted).map((h) => ({ name: h.name, address: h.address })),
      groups: exists ? await count('ks_group_epochs') : 0,
      principals: exists ? await count('ks_seq_alloc') : 0,
      memberKeys: exists ? await count('ks_member_keys') : 0,
      journal: { rows: Number(j.n), oldest: j.oldest === null ? null : Number(j.oldest) },
    };
  } finally {
    await c.end().catch(() => {});
  }
}
