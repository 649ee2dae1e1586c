/**
 * What several broker nodes share through Redis (docs/operations.md, Scaling):
 *
 * - routing between nodes: Aedes' own clustering route, mqemitter-redis
 *   (a PUBLISH accepted on one node reaches subscribers on every node);
 * - subscriptions, retained messages and QoS 1 queues of persistent sessions:
 *   aedes-persistence-redis (a backend whose node dies reconnects to another
 *   and finds its queue there);
 * - the §8.5 QoS 1 grace state of device sessions (shared-grace.ts), so the
 *   node a device moves to can open a message resent unchanged;
 * - a node directory (who is up, its address, sessions) for `mqsec status`.
 *
 * Every connection is our own ioredis client, so the node knows at any time
 * whether the shared state is reachable: while it is not, new logins are
 * refused with CONNACK 3 (hooks/authenticate.ts) and live sessions stay; their
 * publishes wait in ioredis' offline queue (no PUBACK before Redis took them)
 * and go through when Redis is back. ioredis reconnects by itself.
 *
 * Redis pub/sub is at-most-once: a node whose subscriber connection was down
 * may have missed routed messages. Persistent sessions do not lose them (every
 * QoS 1 message for them is queued in Redis before the publisher's PUBACK),
 * but a live one would only see them at its next connect; so after such a gap
 * the node emits 'routing-resumed' and the broker closes its persistent-session
 * clients, which reconnect and get their queue replayed.
 */
import { EventEmitter } from 'node:events';
import { Redis, type RedisOptions } from 'ioredis';
import mqemitterRedis from 'mqemitter-redis';
import redisPersistence from 'aedes-persistence-redis';
import type { Logger } from 'pino';

/** Keys of mqsec's own state; Aedes' persistence uses its own (unprefixed) keys in the same database. */
export const KEY_PREFIX = 'mqsec:';
const NODES_KEY = `${KEY_PREFIX}nodes`;

/** One node as it announces itself (every `heartbeatMs`). */
export interface NodeInfo {
  id: string;
  pid: number;
  host: string;
  port: number;
  metricsPort?: number;
  /** Authenticated device sessions on this node. */
  devices: number;
  /** Account (password) sessions on this node. */
  accounts: number;
  startedAt: number;
  /** Time of this announcement (node clock, ms). */
  at: number;
}

export interface NodeStatus extends NodeInfo {
  /** Announced within the last 3 heartbeats. */
  up: boolean;
}

export const HEARTBEAT_MS = 1000;

export interface ClusterStateOptions {
  url: string;
  nodeId: string;
  log: Logger;
  /** How long to wait for Redis at start before giving up. */
  connectTimeoutMs?: number;
}

function parseRedisUrl(url: string): RedisOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`--cluster must be a redis:// URL, got "${url}"`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error(`--cluster must be a redis:// URL, got "${url}"`);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new Error(`--cluster: bad database number in "${url}"`);
  return {
    host: u.hostname || '127.0.0.1',
    port: u.port ? Number(u.port) : 6379,
    db,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    tls: u.protocol === 'rediss:' ? {} : undefined,
  };
}

export class ClusterState extends EventEmitter {
  readonly nodeId: string;
  /** For Aedes: `new Aedes({ mq: emitter, persistence })`. */
  readonly emitter: unknown;
  readonly persistence: unknown;
  /** Grace records, node directory: fails fast while Redis is away (no offline queue). */
  readonly state: Redis;
  private readonly conns: Redis[];
  private readonly log: Logger;
  private routingGap = false;
  private closed = false;

  private constructor(o: ClusterStateOptions, base: RedisOptions) {
    super();
    this.nodeId = o.nodeId;
    this.log = o.log;
    // Aedes' connections queue commands while Redis is away (null: no retry limit), so a
    // publish accepted before an outage completes after it instead of failing half-way.
    const queued: RedisOptions = { ...base, maxRetriesPerRequest: null, retryStrategy: (n) => Math.min(50 * n, 1000) };
    const pub = new Redis({ ...queued, connectionName: `mqsec-${o.nodeId}-pub` });
    const sub = new Redis({ ...queued, connectionName: `mqsec-${o.nodeId}-sub` });
    const db = new Redis({ ...queued, connectionName: `mqsec-${o.nodeId}-persist` });
    this.state = new Redis({ ...base, enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy: (n) => Math.min(50 * n, 1000), connectionName: `mqsec-${o.nodeId}-state` });
    this.conns = [pub, sub, db, this.state];
    for (const c of this.conns) {
      c.on('error', (err: Error) => this.log.debug({ err: err.message }, 'redis connection error'));
      c.on('close', () => {
        if (!this.closed) this.emit('availability', false);
      });
      c.on('ready', () => this.emit('availability', this.available()));
    }
    sub.on('close', () => {
      if (!this.closed) this.routingGap = true;
    });
    sub.on('ready', () => {
      if (!this.routingGap) return;
      this.routingGap = false;
      // ioredis re-subscribes (autoResubscribe) before 'ready' is emitted
      this.emit('routing-resumed');
    });
    const emitter = mqemitterRedis({ pubConn: pub, subConn: sub });
    // mqemitter-redis re-emits connection errors on `state`; unheard, an EventEmitter 'error' would end the process
    (emitter as unknown as { state: EventEmitter }).state.on('error', (err: Error) => this.log.debug({ err: err.message }, 'redis routing error'));
    this.emitter = emitter;
    this.persistence = redisPersistence({ conn: db });
  }

  /** Connects (waits until every connection is ready, at most `connectTimeoutMs`). */
  static async open(o: ClusterStateOptions): Promise<ClusterState> {
    const s = new ClusterState(o, parseRedisUrl(o.url));
    const deadline = Date.now() + (o.connectTimeoutMs ?? 10_000);
    while (!s.available()) {
      if (Date.now() > deadline) {
        s.disconnect();
        throw new Error(`cannot reach Redis at ${o.url} (--cluster)`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    return s;
  }

  /** Every Redis connection is up: logins may be accepted. */
  available(): boolean {
    return !this.closed && this.conns.every((c) => c.status === 'ready');
  }

  /** Announces this node (expires from `mqsec status`'s "up" after 3 heartbeats). */
  async announce(info: Omit<NodeInfo, 'id' | 'at'>): Promise<void> {
    const full: NodeInfo = { id: this.nodeId, ...info, at: Date.now() };
    await this.state.hset(NODES_KEY, this.nodeId, JSON.stringify(full));
  }

  /** A node that stopped gracefully leaves the directory. */
  async withdraw(): Promise<void> {
    await this.state.hdel(NODES_KEY, this.nodeId);
  }

  /** Closes the node's own connections (after Aedes closed the emitter and persistence). */
  disconnect(): void {
    this.closed = true;
    for (const c of this.conns) c.disconnect();
  }
}

/** The node directory as `mqsec status` shows it (a separate, short-lived connection). */
export async function listNodes(url: string, now = Date.now()): Promise<NodeStatus[]> {
  const r = new Redis({ ...parseRedisUrl(url), lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  r.on('error', () => {});
  try {
    await r.connect();
    const all = await r.hgetall(NODES_KEY);
    return Object.values(all)
      .map((v) => JSON.parse(v) as NodeInfo)
      .map((n) => ({ ...n, up: now - n.at <= 3 * HEARTBEAT_MS + 500 }))
      .sort((a, b) => a.id.localeCompare(b.id));
  } finally {
    r.disconnect();
  }
}

export { parseRedisUrl };
