/**
 * The key service as its own process (`mqsec keyservice`): an MQTT client of
 * the mqsec broker, logged in as an account of the reserved role
 * `keyservice`, speaking the link frames of link.ts. Its store (epochs,
 * sequence allocations, K_ks) is in its own data directory, which the broker
 * never opens (docs/protocol.md §14.2, §14.12).
 *
 * Each process start draws a new instance id and says HELLO with it after
 * every (re)connect: the broker tells a reconnect of the same process (it
 * still holds its delivery answers) from a restarted one (it does not).
 *
 * Broker nodes of a cluster (`mqsec broker --cluster`) share the registry but
 * not their clients: the key service links to every node (one MQTT client
 * each) and answers a member through the node its latest GKREQ came from;
 * a "connection ended" counts only from that node (the member may already
 * have asked again through another). One key service, so one key per group
 * epoch for the whole cluster.
 *
 * Replicas (`--db postgres://...`, §14.13): every replica opens the shared
 * store and waits for the active lock (active-lock.ts); only the holder links
 * to the brokers. When the holder dies, a standby gets the lock and links
 * with a new instance id: to the brokers that is exactly a key service
 * restart (members asked again, every group on a new epoch drawn from the
 * shared store, so no epoch and no sequence range is handed out twice).
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import type { Logger } from 'pino';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { isMqsecError } from '../../firmware/core/errors.js';
import { acquireDirLock, type DirLock } from '../registry/lock.js';
import { KeyServiceAgent } from './agent.js';
import { INSTANCE_LENGTH, KS_IN_TOPIC, KS_OUT_TOPIC, decodeFrame, encodeFrame, type LinkFrame } from './link.js';
import { SqliteKeyServiceStore, type KeyServiceStore } from './store.js';
import { PgKeyServiceStore } from './pg-store.js';
import { ActiveLock } from './active-lock.js';

export interface KeyServiceProcessOptions {
  /** mqtt://host:port or mqtts://host:port of the mqsec broker: one, or every node of a cluster. */
  brokerUrls: string[];
  username: string;
  password: string;
  /** CA certificate (PEM) for mqtts:// with a certificate the system does not trust. */
  ca?: Buffer;
  dataDir: string;
  /** The replicas' PostgreSQL (postgres://...); absent: SQLite in dataDir, one process. */
  db?: string;
  /** With `db`: days the journal of handed-out epochs and ranges is kept (default 7). */
  journalDays?: number;
  suite: CryptoSuite;
  log: Logger;
  rekeyIntervalMs?: number;
  seqBlock?: number;
}

export interface RunningKeyService {
  agent: KeyServiceAgent;
  clients: MqttClient[];
  /** Resolves once logged in to every broker (rejects if one refuses the credential). */
  linked: Promise<void>;
  stop(): Promise<void>;
}

export function startKeyServiceProcess(o: KeyServiceProcessOptions): RunningKeyService {
  const store = SqliteKeyServiceStore.open(o.dataDir);
  let lock: DirLock;
  try {
    lock = acquireDirLock(o.dataDir);
  } catch (e) {
    void store.close();
    throw e;
  }
  const links = linkKeyService(o, store);
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      await links.stop();
      await store.close();
      lock.release();
    })());
  return { ...links, stop };
}

export interface ReplicaEvents {
  /** Another replica is active: this one waits. */
  standby(): void;
  /** This replica holds the active lock and links to the brokers. */
  active(links: RunningKeyService): void;
  /** The lock was lost: this replica stopped answering and waits again. */
  lost(why: string): void;
}

export interface RunningReplica {
  /** The current links while active. */
  current(): RunningKeyService | undefined;
  store: PgKeyServiceStore;
  stop(): Promise<void>;
}

/**
 * One key service replica on PostgreSQL (§14.13): waits for the active lock,
 * links while it holds it, and stops answering (agent closed, group keys
 * wiped, links ended) the moment it may have lost it, then waits again.
 */
export async function startKeyServiceReplica(o: KeyServiceProcessOptions & { db: string }, events: ReplicaEvents): Promise<RunningReplica> {
  mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
  const lock = acquireDirLock(o.dataDir);
  const instanceHex = randomBytes(4).toString('hex');
  let store: PgKeyServiceStore;
  try {
    store = await PgKeyServiceStore.open({ url: o.db, dataDir: o.dataDir, holder: `${o.username}@${instanceHex}`, journalDays: o.journalDays });
  } catch (e) {
    lock.release();
    throw e;
  }
  const abort = new AbortController();
  let links: RunningKeyService | undefined;
  let active: ActiveLock | undefined;
  const loop = (async () => {
    while (!abort.signal.aborted) {
      try {
        active = await ActiveLock.acquire({ url: o.db, name: `mqsec-keyservice ${o.username}@${instanceHex}`, onStandby: () => events.standby(), onRetry: (e) => o.log.warn({ err: e.message }, 'active lock: PostgreSQL not reachable, retrying') }, abort.signal);
      } catch {
        return; // stopped
      }
      const lost = new Promise<string>((r) => active!.onLost(r));
      links = linkKeyService(o, store);
      events.active(links);
      // the active replica keeps the journal to its retention
      const prune = setInterval(() => void store.prune().catch(() => {}), 3_600_000);
      prune.unref();
      lost.finally(() => clearInterval(prune)).catch(() => {});
      const why = await Promise.race([lost, new Promise<string>((r) => abort.signal.addEventListener('abort', () => r('stopped')))]);
      clearInterval(prune);
      const l = links;
      links = undefined;
      await l.stop();
      if (why === 'stopped') return;
      events.lost(why);
    }
  })();
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      abort.abort();
      await loop;
      // the links are down before the lock goes: a standby never overlaps with this one
      await active?.release();
      await store.close();
      lock.release();
    })());
  return { current: () => links, store, stop };
}

/** The links of one key service instance (new instance id) to every broker, over `store`. */
function linkKeyService(o: KeyServiceProcessOptions, store: KeyServiceStore): RunningKeyService {
  const instance = new Uint8Array(randomBytes(INSTANCE_LENGTH));
  const opts: IClientOptions = {
    username: o.username,
    password: o.password,
    clientId: o.username,
    clean: true,
    reconnectPeriod: 500,
    connectTimeout: 5000,
    // a delivery made while unlinked is for a connection that may be gone: never queued
    queueQoSZero: false,
    ca: o.ca,
  };
  if (o.brokerUrls.length === 0) throw new Error('no broker to link to');
  /** The node each member's latest GKREQ came through: its answers and pushes go back there. */
  const route = new Map<string, MqttClient>();
  const send = (client: MqttClient, f: LinkFrame) => {
    if (!client.connected) return;
    client.publish(KS_OUT_TOPIC, Buffer.from(encodeFrame(f)), { qos: 0 });
  };
  const agent = new KeyServiceAgent({
    suite: o.suite,
    store,
    members: {
      deliver: (id, gkdel) => {
        const via = route.get(id);
        if (via) send(via, { type: 'deliver', id, payload: gkdel });
      },
    },
    rekeyIntervalMs: o.rekeyIntervalMs,
    seqBlock: o.seqBlock,
    onRekey: (filter, epoch, reason) => o.log.info({ group: filter, epoch, reason }, 'group re-keyed'),
    onRefused: (id, code) => o.log.info({ subject: id, code }, 'group key request refused'),
  });
  // one client id per node (an account's own name, or name/...): cluster nodes take over a client id from each other
  const clients = o.brokerUrls.map((url, i) => linkTo(url, o.brokerUrls.length > 1 ? `${o.username}/node${i + 1}` : o.username));
  const linked = Promise.all(clients.map((c) => c.linked)).then(() => undefined);
  linked.catch(() => {});

  function linkTo(url: string, clientId: string): MqttClient & { linked: Promise<void> } {
    const client = mqtt.connect(url, { ...opts, clientId });
    let firstLink: (() => void) | undefined;
    let firstFail: ((e: Error) => void) | undefined;
    const linkedOne = new Promise<void>((res, rej) => ((firstLink = res), (firstFail = rej)));
    client.on('connect', () => {
      send(client, { type: 'hello', instance });
      o.log.info({ broker: url }, 'key service linked to the broker');
      firstLink?.();
      firstLink = firstFail = undefined;
    });
    client.on('error', (e) => {
      o.log.warn({ broker: url, err: e.message }, 'broker link error');
      // a refused login does not get better by retrying (5: not authorised, 4: bad credentials)
      const code = (e as { code?: number }).code;
      if (firstFail && (code === 4 || code === 5)) {
        firstFail(new Error(`the broker ${url} refused the key service login (CONNACK ${code})`));
        firstLink = firstFail = undefined;
        client.end(true);
      }
    });
    client.on('close', () => o.log.debug({ broker: url }, 'broker link closed'));
    client.on('message', (topic, payload) => {
      if (topic !== KS_IN_TOPIC) return;
      let f: LinkFrame;
      try {
        f = decodeFrame(new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength));
      } catch (e) {
        o.log.warn({ broker: url, code: isMqsecError(e) ? e.code : String(e) }, 'bad link frame from the broker');
        return;
      }
      switch (f.type) {
        case 'request':
          route.set(f.id, client);
          return agent.request(f.id, f.payload);
        case 'left':
          if (route.get(f.id) !== client) return; // it asked again through another node since
          route.delete(f.id);
          return agent.left(f.id);
        case 'policy':
          return agent.policy(f.policy);
        case 'rotate':
          return agent.rotate(f.filter, f.id);
        default:
          o.log.warn({ broker: url, type: f.type }, 'unexpected link frame from the broker');
      }
    });
    return Object.assign(client, { linked: linkedOne });
  }
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      // answers stop first (group keys wiped), then the links go
      agent.close();
      await Promise.all(clients.map((c) => new Promise<void>((r) => c.end(false, {}, () => r()))));
      instance.fill(0);
    })());
  return { agent, clients, linked, stop };
}
