/**
 * The security-enhanced broker: Aedes 1.2 with every policy decision in a
 * hook (broker/hooks), a TCP server that puts the pre-parse limits in front
 * of Aedes, the SQLite registry, Prometheus metrics and pino logs.
 *
 * Revocation reaches a running broker through the registry: admin commands
 * bump a revision counter in the registry, and the broker polls it every
 * `revisionPollMs` (250 ms by default; a single-row read). With a registry
 * in PostgreSQL shared by several nodes, each change is also pushed to every
 * node at commit (LISTEN/NOTIFY, broker/registry/pg-registry.ts). On a change it
 * reloads roles and rules and closes every session whose device was revoked
 * or re-keyed, or whose account was disabled or changed role. Chosen over an
 * admin channel because it needs no extra listener or credential and works
 * the same whether the CLI runs before, during or after the broker.
 */
import { Aedes, type Client } from 'aedes';
import memoryPersistence from 'aedes-persistence';
import { DrainTracker } from './drain.js';
import { closeServer, listenOn } from './listen.js';
import { restoreGraceState, saveGraceState } from './grace-store.js';
import { BlockList, createServer, isIPv4, isIPv6, type Server, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { loadOrCreateTlsCert, type TlsFiles } from './tls-cert.js';
import type { Server as HttpServer } from 'node:http';
import { pino, type Logger } from 'pino';
import { ServerHandshake, type TicketRecord, type TicketStore } from '../firmware/secure/index.js';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { KeyServiceAgent } from './keyservice/agent.js';
import { GroupDirectory } from './keyservice/membership.js';
import { KEY_SERVICE_DB_FILE, SqliteKeyServiceStore } from './keyservice/store.js';
import { ExternalKeyService, createMemberPort } from './keyservice-link.js';
import type { CryptoSuite } from '../firmware/crypto/suite.js';
import { createSodiumSuite } from '../platform-node/sodium-suite.js';
import { aedesClients, audit, forgetStaleGrace, keyIdentity, reloadRoles, sameDeviceKey, type BrokerContext } from './context.js';
import { createAuthenticate } from './hooks/authenticate.js';
import { createAuthorizeForward } from './hooks/authorize-forward.js';
import { createAuthorizePublish } from './hooks/authorize-publish.js';
import { createAuthorizeSubscribe } from './hooks/authorize-subscribe.js';
import { createClientReady } from './hooks/client-ready.js';
import { createPreConnect } from './hooks/pre-connect.js';
import { resolveLimits, retainedLimitsOf, type BrokerLimits } from './limits/config.js';
import { RESTORED_OWNER, RetainedBudget } from './limits/retained-budget.js';

/** What an Aedes persistence offers to list its retained messages. */
interface RetainedSource {
  createRetainedStream(pattern: string): AsyncIterable<{ topic: string; payload: Buffer }>;
}
import { GuardedSocket } from './limits/guarded-socket.js';
import { RateLimiter } from './limits/rate-limit.js';
import { BrokerMetrics } from './metrics.js';
import { acquireDirLock, type DirLock } from './registry/lock.js';
import { GROUP_ROTATE } from './registry/registry.js';
import { openRegistry } from './registry/open.js';
import type { Registry } from './registry/store.js';
import { RegistryTicketStore } from './registry/ticket-store.js';
import type { ConsoleOptions, RunningConsole } from './console/server.js';
import { EventEmitter } from 'node:events';
import { ClusterState, HEARTBEAT_MS } from './cluster/redis-state.js';
import { SharedGrace } from './cluster/shared-grace.js';
import { ackAfterRoute, keepDropsLocal, ROUTED_AHEAD } from './cluster/ack-after-route.js';
import { DEFAULT_GRACE_MS } from '../firmware/secure/server.js';

/** The embedded key service's own file in the data directory (epochs, sequence allocations, K_ks sealed under keyservice.key). */
export { KEY_SERVICE_DB_FILE };

export interface BrokerOptions {
  dataDir: string;
  /** A postgres:// URL: the registry in PostgreSQL, shared with other nodes; absent: SQLite in dataDir. */
  db?: string;
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  /** Serve Prometheus metrics on this port (0 = free port); omitted = not served. */
  metricsPort?: number;
  logger?: Logger;
  /** Used when no logger is given; default 'info'. */
  logLevel?: string;
  limits?: Partial<BrokerLimits>;
  /** Phase-2 ticket lifetime, ms (default 7 days). */
  ticketLifetimeMs?: number;
  /** How often the registry revision is polled: 250 ms, 5 s when the registry pushes its changes (PostgreSQL). */
  revisionPollMs?: number;
  /** End-to-end groups (docs/protocol.md §14.3): periodic re-key, default 24 h. */
  groupRekeyIntervalMs?: number;
  /** Publisher sequence numbers handed out per connection (§14.4), default 4096. */
  groupSeqBlock?: number;
  /**
   * Where the key service runs (docs/protocol.md §14.11). 'embedded' (default):
   * inside this process, its store in the data directory. 'external': a
   * separate `mqsec keyservice` process logs in as an account of the role
   * `keyservice`; this broker never opens a key service store, and its
   * registry refuses to provision K_ks into its own directory.
   */
  keyService?: 'embedded' | 'external';
  /**
   * Graceful stop: devices' input is paused, then the broker waits (at most
   * this long) until every message already read is routed and every
   * persistent subscriber has acknowledged what it was sent, so a restart
   * neither loses nor duplicates QoS 1 (broker/drain.ts). Default 3000 ms; 0 = abrupt.
   */
  drainMs?: number;
  /**
   * TLS listener for accounts (unmodified MQTT clients send their password in
   * CONNECT). Omitted: no TLS listener. The certificate comes from files, or
   * is generated into `<dataDir>/tls/` at first start (broker/tls-cert.ts).
   */
  tls?: { port?: number; host?: string } & TlsFiles;
  /**
   * Accept account (password) logins over plain TCP from any address. Default
   * false: over plain TCP only from `localAddresses`; elsewhere TLS is needed.
   * Logged as a warning at start.
   */
  allowPlainAccounts?: boolean;
  /** CIDR blocks whose plain-TCP password logins are accepted (default loopback: 127.0.0.0/8, ::1/128). */
  localAddresses?: string[];
  /** Mosquitto's use_username_as_clientid: an account always connects under its own name as client id. */
  useUsernameAsClientId?: boolean;
  /** Crypto suite (default node:crypto suite 1). */
  suite?: CryptoSuite;
  /**
   * Aedes persistence (subscriptions, offline QoS 1 queues, retained messages).
   * Default: a fresh in-memory store. Passing the same store to a restarted
   * broker models a durable one (aedes-persistence-redis and the like).
   */
  persistence?: unknown;
  /** Serve the operator console (broker/console); omitted = not served. */
  console?: ConsoleOptions;
  /**
   * Run as one node of several (docs/operations.md, Scaling): routing between
   * nodes, Aedes' persistence, the shared §8.5 grace state and the node
   * directory in Redis (broker/cluster). Every node shares the registry.
   * Overrides `persistence`.
   */
  cluster?: { url: string; nodeId: string };
}

export interface RunningBroker {
  host: string;
  port: number;
  /** The TLS listener's port and the certificate clients should trust, when TLS is on. */
  tls?: { host: string; port: number; certPath: string; fingerprint: string };
  metricsPort?: number;
  registry: Registry;
  aedes: Aedes;
  metrics: BrokerMetrics;
  /** Internal state, for tests and tools. */
  context: BrokerContext;
  /** Applies registry changes now instead of at the next poll (resolves once applied). */
  syncRegistry(): Promise<void>;
  /** Emits 'change' after a registry change was applied (revocations enforced). */
  registryEvents: EventEmitter;
  /** The operator console, when served. */
  console?: RunningConsole;
  stop(): Promise<void>;
}

/**
 * §14.12: every node's embedded key service would draw its own random key for
 * the same group epoch (and move the epoch once per node), so members on
 * different nodes could not read each other: cluster nodes link to one key
 * service process (or its replicas, §14.13) instead.
 */
export const CLUSTER_NEEDS_EXTERNAL_KEY_SERVICE =
  'a cluster node cannot run the embedded key service (each node would draw its own group keys): start every node with --keyservice external and run `mqsec keyservice --broker <node> --broker <node> ...` (replicas: --db postgres://...)';

export async function startBroker(opts: BrokerOptions): Promise<RunningBroker> {
  const log = opts.logger ?? pino({ level: opts.logLevel ?? 'info', base: { svc: 'mqsec-broker' } });
  const external = opts.keyService === 'external';
  if (opts.cluster && !external) throw new Error(CLUSTER_NEEDS_EXTERNAL_KEY_SERVICE);
  // §14.2: with an external key service this process never opens a key service store
  const registry = await openRegistry({ dataDir: opts.dataDir, db: opts.db, memberKeys: external ? null : undefined });
  let lock: DirLock;
  try {
    // nodes of a cluster on one host may share the data directory's registry (SQLite is
    // multi-process safe); each still locks its own node name, so no id runs twice
    lock = acquireDirLock(registry.dataDir, opts.cluster ? `broker-${nodeFileName(opts.cluster.nodeId)}.lock` : undefined);
  } catch (e) {
    await registry.close();
    throw e;
  }
  // Everything opened from here on registers how to close it: a start-up failure
  // (a port taken, an address this machine does not have) closes it all in reverse
  // order and releases the lock, so the process can exit and a supervisor restart it.
  const opened: (() => void | Promise<void>)[] = [async () => (await registry.close(), lock.release())];
  try {
    return await openBroker(opts, log, registry, lock, opened);
  } catch (e) {
    for (const close of opened.reverse()) {
      try {
        await close();
      } catch (closeError) {
        log.warn({ err: closeError }, 'closing after a failed start');
      }
    }
    throw e;
  }
}

async function openBroker(
  opts: BrokerOptions,
  log: Logger,
  registry: Registry,
  lock: DirLock,
  opened: (() => void | Promise<void>)[],
): Promise<RunningBroker> {
  const host = opts.host ?? '127.0.0.1';
  const limits = resolveLimits(opts.limits);
  const external = opts.keyService === 'external';

  const metrics = new BrokerMetrics();
  // Cluster node: every metric carries the node id, so one Prometheus scrapes all nodes apart.
  if (opts.cluster) metrics.registry.setDefaultLabels({ node: opts.cluster.nodeId });
  let cluster: ClusterState | undefined;
  if (opts.cluster) {
    cluster = await ClusterState.open({ url: opts.cluster.url, nodeId: opts.cluster.nodeId, log });
    const c = cluster;
    opened.push(() => c.disconnect());
  }
  const decoyKey = new Uint8Array(randomBytes(32));
  opened.push(() => void decoyKey.fill(0));
  const ticketStore = new RegistryTicketStore(registry);
  const handshake = new ServerHandshake({
    suite: opts.suite ?? createSodiumSuite(),
    clock: { now: () => Date.now() },
    ticketStore: countedTicketStore(ticketStore, metrics),
    ticketLifetimeMs: opts.ticketLifetimeMs,
    lookupDevice: async (devId: string) => {
      metrics.registryOps.inc({ op: 'device_key' });
      // §14.2: the registry holds K_auth and K_psk only (never K, so never K_ks)
      const k = await registry.handshakeKeys(devId);
      // §10: an unknown or revoked id is looked up with decoy keys nobody holds, so its
      // KX1 fails exactly like a wrong key (one HMAC, BAD_MAC, CONNACK 4) and a refusal
      // does not tell which ids are registered. (A RESUME finds no ticket either way.)
      if (!k) return { keys: { authKey: decoyKey.slice(), pskKey: decoyKey.slice() }, status: 'active' as const };
      // the handshake wipes both once it has used them
      return { keys: { authKey: k.authKey, pskKey: k.pskKey }, status: 'active' as const };
    },
  });
  // Before the listener opens: the first reconnects must find the grace state (§8.5).
  const graceKeys = new Map<string, string>();
  // a cluster node's grace state is in Redis (cluster/shared-grace.ts), read per device as it arrives
  if (!cluster) try {
    const restored = await restoreGraceState(registry, handshake, Date.now(), (msg, detail) => log.warn(detail, msg));
    // Revoke, rotate and remove delete a device's stored grace row in their own transaction,
    // so what was restored belongs to the key the registry holds now.
    const devices = await registry.deviceKeyStates();
    for (const devId of restored) {
      const d = devices.get(devId);
      if (d?.status === 'active') graceKeys.set(devId, keyIdentity(d));
      else handshake.forgetGrace(devId);
    }
    if (restored.length) log.info({ devices: restored.length }, 'QoS 1 grace state of the last graceful stop restored');
  } catch (e) {
    log.warn({ err: e }, 'QoS 1 grace state not restored');
  }

  const liveDevicesRef = new Map<string, Client>();
  // a key delivery goes to the member's live connection only (§14.6)
  const memberPort = createMemberPort({ liveDevices: liveDevicesRef, metrics });
  let agent: KeyServiceAgent | undefined;
  let keyServiceStore: SqliteKeyServiceStore | undefined;
  // §14.12: the key service's state lives in one place; starting the other way round would
  // hand out epochs from 1 again and know no member's K_ks
  if (!external && (await registry.keyServiceMode()) === 'external') {
    throw new Error(`the key service of ${registry.dataDir} runs as its own process (\`mqsec keyservice migrate\` moved its state out): start the broker with --keyservice external`);
  }
  if (external && existsSync(join(registry.dataDir, KEY_SERVICE_DB_FILE))) {
    throw new Error(`${join(registry.dataDir, KEY_SERVICE_DB_FILE)} holds the embedded key service's state: move it to the key service's own directory first (\`mqsec keyservice migrate --from ${registry.dataDir} --data <dir>\`)`);
  }
  await registry.setKeyServiceMode(external ? 'external' : 'embedded');
  if (!external) {
    const store = new SqliteKeyServiceStore(join(registry.dataDir, KEY_SERVICE_DB_FILE));
    keyServiceStore = store;
    opened.push(() => store.close());
    const a = new KeyServiceAgent({
      suite: opts.suite ?? createSodiumSuite(),
      store,
      members: memberPort,
      rekeyIntervalMs: opts.groupRekeyIntervalMs,
      seqBlock: opts.groupSeqBlock,
      onRekey: (filter, epoch, reason) => log.info({ group: filter, epoch, reason }, 'group re-keyed'),
      onRefused: (id, code) => {
        metrics.drops.inc({ reason: `gkreq-${code.toLowerCase()}` });
        audit(ctx, 'groupkey.refused', id, code, null);
      },
    });
    agent = a;
    opened.push(() => a.close());
  }

  const drain = new DrainTracker();
  const persistence = drain.track(cluster?.persistence ?? opts.persistence ?? memoryPersistence());
  // Before the listener opens: retained messages a durable store kept count against the
  // global retained limits (who stored them is not kept there: see retained-budget.ts).
  const retained = new RetainedBudget(retainedLimitsOf(limits));
  for await (const packet of (persistence as RetainedSource).createRetainedStream('#')) {
    retained.store(RESTORED_OWNER, packet.topic, packet.payload.length);
  }
  const aedes = new Aedes({
    ...(cluster ? { id: cluster.nodeId, mq: keepDropsLocal(cluster.emitter as never) } : {}),
    persistence: persistence as never,
    connectTimeout: limits.connectTimeoutMs,
    drainTimeout: limits.drainTimeoutMs,
    queueLimit: limits.queueLimit,
    maxClientsIdLength: 23,
  });
  const ctx: BrokerContext = {
    aedes,
    registry,
    handshake,
    groups: new GroupDirectory(),
    keyLink: agent ?? { request() {}, left() {}, policy() {}, rotate() {} },
    keyService: agent?.service,
    log,
    metrics,
    limits,
    retained,
    states: new WeakMap(),
    liveDevices: liveDevicesRef,
    events: new EventEmitter(),
    graceKeys,
    pendingCount: { value: 0 },
    roles: new Map(),
    persistentPrincipals: !cluster,
    phase1ByAddress: new RateLimiter(limits.phase1PerAddress),
    phase1ByDevice: new RateLimiter(limits.phase1PerDevice),
    authByAddress: new RateLimiter(limits.authPerAddress),
    passwordByAddress: new RateLimiter(limits.passwordPerAddress),
    accounts: {
      allowPlain: opts.allowPlainAccounts === true,
      isLocal: addressMatcher(opts.localAddresses ?? DEFAULT_LOCAL_ADDRESSES),
      useUsernameAsClientId: opts.useUsernameAsClientId === true,
    },
    emptyClientIds: new WeakSet(),
    auditBudget: { second: 0, used: 0, suppressed: 0 },
    cluster: cluster && {
      state: cluster,
      grace: new SharedGrace(cluster.state, { seal: (l, p) => registry.sealSecret(l, p), open: (l, b) => registry.openSecret(l, b) }, {
        graceMs: DEFAULT_GRACE_MS,
        warn: (msg, detail) => log.warn(detail, msg),
      }),
    },
  };
  if (external) {
    ctx.externalKeyService = new ExternalKeyService(ctx, memberPort);
    ctx.keyLink = ctx.externalKeyService;
    metrics.keyServiceLinked.set(0);
  }
  await reloadRoles(ctx);
  aedes.preConnect = createPreConnect(ctx);
  aedes.authenticate = createAuthenticate(ctx);
  const authorizePublish = drain.wrapAuthorizePublish(createAuthorizePublish(ctx));
  // a cluster node acknowledges QoS 1 only once the message is routed and queued in Redis (cluster/ack-after-route.ts)
  aedes.authorizePublish = cluster ? ackAfterRoute(aedes, authorizePublish) : authorizePublish;
  aedes.on('publish', (packet, client: Client | null) => {
    if (!(packet as { [ROUTED_AHEAD]?: boolean })[ROUTED_AHEAD]) drain.onPublished(client);
  });
  aedes.authorizeSubscribe = createAuthorizeSubscribe(ctx);
  aedes.authorizeForward = createAuthorizeForward(ctx);
  aedes.on('clientReady', createClientReady(ctx));
  aedes.on('clientError', (client: Client, err: Error) => log.debug({ client: client.id, err: err.message }, 'client error'));
  aedes.on('connectionError', (_c: Client, err: Error) => log.debug({ err: err.message }, 'connection error'));
  // Aedes reports a failed persistence call here (e.g. Redis away); without a listener it would end the process
  (aedes as unknown as EventEmitter).on('error', (err: Error) => log.warn({ err: err.message }, 'broker error'));
  await aedes.listen();
  opened.push(() => new Promise<void>((r) => aedes.close(() => r())));

  const sockets = new Map<Socket, GuardedSocket>();
  let draining = false;
  const onSocket = (socket: Socket) => {
    if (draining) return void socket.destroy();
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const conn = new GuardedSocket(socket, {
      maxPacketSize: limits.maxPacketSize,
      packetTimeoutMs: limits.packetTimeoutMs,
      maxOutgoingBytes: limits.maxOutgoingBytes,
      onReject: (reason) => {
        metrics.rejects.inc({ reason });
        log.info({ remote: socket.remoteAddress, reason }, 'connection closed by limits');
      },
    });
    sockets.set(socket, conn);
    aedes.handle(conn as never);
  };
  const server: Server = createServer(onSocket);
  server.maxConnections = limits.maxConnections;
  const port = await listenOn(server, opts.port ?? 1883, host, 'MQTT');
  opened.push(() => closeServer(server));

  let tlsServer: TlsServer | undefined;
  let tlsInfo: RunningBroker['tls'];
  if (opts.tls) {
    const creds = loadOrCreateTlsCert(registry.dataDir, opts.tls.host ?? host, opts.tls);
    if (creds.generated) log.info({ cert: creds.certPath, sha256: creds.fingerprint }, 'TLS certificate generated: give clients this file as their CA file');
    tlsServer = createTlsServer({ cert: creds.cert, key: creds.key, minVersion: 'TLSv1.2', handshakeTimeout: limits.connectTimeoutMs });
    creds.key.fill(0);
    tlsServer.on('secureConnection', onSocket);
    tlsServer.on('tlsClientError', (err, socket) => {
      metrics.rejects.inc({ reason: 'tls-handshake' });
      log.debug({ remote: socket.remoteAddress, err: err.message }, 'TLS handshake failed');
    });
    tlsServer.maxConnections = limits.maxConnections;
    const tlsHost = opts.tls.host ?? host;
    const tlsPort = await listenOn(tlsServer, opts.tls.port ?? 8883, tlsHost, 'MQTT over TLS');
    const t = tlsServer;
    opened.push(() => closeServer(t));
    tlsInfo = { host: tlsHost, port: tlsPort, certPath: creds.certPath, fingerprint: creds.fingerprint };
  }
  if (ctx.accounts.allowPlain) {
    log.warn('--allow-plain-accounts: account passwords and plaintext readings may cross the network unencrypted on the plain MQTT port');
  }

  let metricsServer: HttpServer | undefined;
  let metricsPort: number | undefined;
  if (opts.metricsPort !== undefined) {
    const m = await metrics.serve(host, opts.metricsPort);
    metricsServer = m.server;
    metricsPort = m.port;
    opened.push(() => closeServer(m.server));
  }

  let lastRevision = await registry.revision();
  const registryEvents = new EventEmitter();
  let lastAdminSeq = (await registry.listAudit({ limit: 1 }))[0]?.seq ?? 0;
  const syncOnce = async () => {
    const rev = await registry.revision();
    if (rev === lastRevision) return;
    lastRevision = rev;
    // operator group rotations since the last poll (`mqsec group rotate`), oldest first
    const rotations = (await registry.listAudit({ kind: GROUP_ROTATE, source: 'admin', afterSeq: lastAdminSeq, limit: 1000 })).reverse();
    lastAdminSeq = await logAdminChanges(ctx, lastAdminSeq);
    await applyRegistryChanges(ctx);
    // the audit sequence names the rotation: each node of a cluster passes it on, the key service applies it once
    for (const r of rotations) if (r.subject) ctx.keyLink.rotate(r.subject, r.seq);
    registryEvents.emit('change', rev);
  };
  // One sync at a time; a request during one runs once more after it (a change may have landed meanwhile).
  let syncing: Promise<void> | undefined;
  let again = false;
  const syncRegistry = (): Promise<void> => {
    if (syncing) {
      again = true;
      return syncing;
    }
    syncing = (async () => {
      try {
        do {
          again = false;
          await syncOnce();
        } while (again);
      } finally {
        syncing = undefined;
      }
    })();
    return syncing;
  };
  const syncLogged = () =>
    syncRegistry().catch((e: unknown) => log.error({ err: e }, 'registry sync failed'));
  // Pushed changes (PostgreSQL LISTEN/NOTIFY from any node) apply at once; the poll is the safety net.
  const unwatch = registry.watch?.(() => void syncLogged());
  opened.push(() => unwatch?.());
  // A registry that pushes its changes needs the poll only for a push lost with its connection (5 s).
  const poll = setInterval(() => void syncLogged(), opts.revisionPollMs ?? (registry.watch ? 5000 : 250));
  poll.unref();
  const purge = setInterval(() => void registry.purgeExpiredTickets().catch((e: unknown) => log.warn({ err: e }, 'ticket purge failed')), 3_600_000);
  purge.unref();
  let heartbeat: NodeJS.Timeout | undefined;
  if (cluster) heartbeat = startClusterDuties(ctx, cluster, { host, port, metricsPort });

  let consoleServer: RunningConsole | undefined;
  if (opts.console) {
    opened.push(() => (clearInterval(poll), clearInterval(purge)));
    // loaded only when served: the web stack stays out of every other start (and of each CLI command)
    const { startConsole } = await import('./console/server.js');
    consoleServer = await startConsole({ ctx, host, port, syncRegistry, registryEvents }, opts.console);
  }

  log.info({ host, port, tlsPort: tlsInfo?.port, metricsPort, dataDir: registry.dataDir }, 'mqsec broker listening');

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      clearInterval(poll);
      clearInterval(purge);
      clearInterval(heartbeat);
      // the devices live here now get their grace counted from this stop, on whatever node they move to
      const liveAtStop = [...ctx.liveDevices.keys()];
      await consoleServer?.close();
      unwatch?.();
      await syncLogged(); // a revocation since the last poll must not reach the grace state written below
      const closed = Promise.all([server, tlsServer].map((srv) => srv && new Promise<void>((r) => srv.close(() => r()))));
      const drainMs = opts.drainMs ?? 3000;
      draining = true;
      if (drainMs > 0) {
        // Read nothing more from anyone but authenticated accounts (the backends whose
        // PUBACKs we wait for): devices, and sockets still connecting, fall silent.
        const accounts = new Set<unknown>();
        for (const client of Object.values(aedesClients(ctx))) {
          if (ctx.states.get(client)?.kind === 'account') accounts.add((client as unknown as { conn?: unknown }).conn);
        }
        for (const guarded of sockets.values()) if (!accounts.has(guarded)) guarded.stopInput();
        const clients = aedesClients(ctx) as Record<string, unknown>;
        if (!(await drain.waitIdle((id) => id in clients, drainMs))) log.warn({ drainMs }, 'stopping before every message was routed and acknowledged');
        // end, not destroy: PUBACKs and deliveries still queued in user space are flushed first
        for (const s of sockets.keys()) s.end();
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const s of sockets.keys()) s.destroy();
      await new Promise<void>((r) => aedes.close(() => r()));
      await closed;
      if (metricsServer) await closeServer(metricsServer);
      // Every connection is closed now: write down the QoS 1 grace state (§8.5) so that a
      // restart is, for the devices, just another reconnect.
      if (ctx.cluster) {
        await saveClusterGrace(ctx, liveAtStop);
        await cluster!.withdraw().catch(() => {});
        cluster!.disconnect();
      } else try {
        const saved = await saveGraceState(registry, handshake);
        log.info({ devices: saved }, 'QoS 1 grace state saved');
      } catch (e) {
        log.warn({ err: e }, 'QoS 1 grace state not saved: a message whose PUBACK was lost may be routed twice after the restart');
      }
      agent?.close();
      keyServiceStore?.close();
      // writes still queued (a handshake cut off by the stop) are committed by close
      await registry.close();
      lock.release();
      log.info('mqsec broker stopped');
    })();
    return stopped;
  };

  return { host, port, tls: tlsInfo, metricsPort, registry, aedes, metrics, context: ctx, syncRegistry, registryEvents, console: consoleServer, stop };
}

/**
 * Admin commands (`mqsec device|user|role|acl`) run in their own process and
 * write their audit rows straight to the registry; the broker logs the ones it
 * has not seen yet at info, so its log tells who changed what (at most 100 per
 * poll, the rest counted). Returns the newest sequence number seen.
 */
async function logAdminChanges(ctx: BrokerContext, afterSeq: number): Promise<number> {
  const rows = (await ctx.registry.listAudit({ source: 'admin', afterSeq, limit: 101 })).reverse();
  for (const r of rows.slice(0, 100)) ctx.log.info({ event: r.kind, subject: r.subject, detail: r.detail }, 'admin change');
  if (rows.length > 100) ctx.log.info({ more: true }, 'more admin changes than logged: see mqsec audit');
  const newest = (await ctx.registry.listAudit({ limit: 1 }))[0]?.seq ?? afterSeq;
  return Math.max(afterSeq, newest);
}

/** Re-read roles, close every session the registry no longer allows, forget revoked or re-keyed devices' grace keys. */
async function applyRegistryChanges(ctx: BrokerContext): Promise<void> {
  await reloadRoles(ctx);
  // one read of every device and account, then the sessions are checked against it
  const [deviceList, accountList] = await Promise.all([ctx.registry.listDevices(), ctx.registry.listAccounts()]);
  const devices = new Map(deviceList.map((d) => [d.id, d]));
  const accounts = new Map(accountList.map((a) => [a.name, a]));
  for (const devId of [...ctx.graceKeys.keys()]) forgetStaleGrace(ctx, devId, devices.get(devId));
  const clients = Object.values(aedesClients(ctx));
  for (const client of clients) {
    const s = ctx.states.get(client);
    if (!s) continue;
    let reason: string | undefined;
    if (s.kind === 'device' || s.kind === 'pending' || s.kind === 'hint') {
      const d = devices.get(s.devId);
      if (!d) reason = 'removed';
      else if (d.status !== 'active') reason = 'revoked';
      // the key's identity, not just its version: removed and added again is version 1 again
      else if (!sameDeviceKey(d, s)) reason = d.keyVersion !== s.keyVersion ? 'key rotated' : 'removed and added again';
      else if (s.kind === 'device' && d.role !== s.roleName) s.roleName = d.role;
    } else {
      const a = accounts.get(s.name);
      if (!a) reason = 'account removed';
      else if (a.status !== 'active') reason = 'account disabled';
      else if (a.role !== s.roleName) s.roleName = a.role;
    }
    if (reason) {
      const subject = s.kind === 'account' ? s.name : s.devId;
      if (s.kind !== 'account') void ctx.cluster?.grace.forget(s.devId);
      ctx.metrics.revocations.inc();
      audit(ctx, 'session.revoked', subject, reason, s.remote);
      client.close();
    }
  }
}

/**
 * The handshake's TicketStore with every call counted by operation
 * (mqsec_registry_ops_total): what a handshake costs the shared registry, the
 * figure a cluster's database is sized by (bench/cluster.ts).
 */
function countedTicketStore(store: TicketStore, metrics: BrokerMetrics): TicketStore {
  const count = <A extends unknown[], R>(op: string, f: (...a: A) => Promise<R>) => (...a: A) => {
    metrics.registryOps.inc({ op });
    return f(...a);
  };
  return {
    getCounter: count('get_counter', (d: string) => store.getCounter(d)),
    advanceCounter: count('advance_counter', (d: string, v: number) => store.advanceCounter(d, v)),
    getTicket: count('get_ticket', (d: string, sid: Uint8Array) => store.getTicket(d, sid)),
    putTicket: count('put_ticket', (t: TicketRecord) => store.putTicket(t)),
    deleteTicket: count('delete_ticket', (d: string, sid: Uint8Array) => store.deleteTicket(d, sid)),
    revokeDevice: count('revoke_device', (d: string) => store.revokeDevice(d)),
    resetDevice: count('reset_device', (d: string) => store.resetDevice(d)),
  };
}

/** A node id as part of a file name. */
function nodeFileName(nodeId: string): string {
  return nodeId.replace(/[^A-Za-z0-9._-]/g, '_');
}

/**
 * A cluster node's periodic duties: announce itself in the node directory, and
 * after a gap in routing (Redis pub/sub missed) close its persistent-session
 * clients so they reconnect and get the QoS 1 messages queued for them.
 */
function startClusterDuties(ctx: BrokerContext, cluster: ClusterState, where: { host: string; port: number; metricsPort?: number }): NodeJS.Timeout {
  const startedAt = Date.now();
  const announce = () => {
    let devices = 0;
    let accounts = 0;
    for (const c of Object.values(aedesClients(ctx))) {
      const k = ctx.states.get(c)?.kind;
      if (k === 'device') devices++;
      else if (k === 'account') accounts++;
    }
    ctx.metrics.clusterUp.set(cluster.available() ? 1 : 0);
    if (!cluster.available()) return;
    cluster.announce({ pid: process.pid, host: where.host, port: where.port, metricsPort: where.metricsPort, devices, accounts, startedAt }).catch((e: Error) => ctx.log.debug({ err: e.message }, 'node announce failed'));
  };
  announce();
  cluster.on('availability', (up: boolean) => {
    ctx.metrics.clusterUp.set(up ? 1 : 0);
    ctx.log.warn({ redis: up ? 'available' : 'unavailable' }, up ? 'cluster store reachable again: logins accepted' : 'cluster store unreachable: new logins refused (CONNACK 3)');
  });
  cluster.on('routing-resumed', () => {
    let closed = 0;
    for (const c of Object.values(aedesClients(ctx))) {
      if ((c as unknown as { clean?: boolean }).clean === false) {
        c.close();
        closed++;
      }
    }
    ctx.log.warn({ closed }, 'routing between nodes resumed after a gap: persistent sessions closed so their queued messages are replayed');
  });
  const t = setInterval(announce, HEARTBEAT_MS);
  t.unref();
  return t;
}

/** Graceful stop of a cluster node: the grace state of the devices it held, with the grace counted from now. */
async function saveClusterGrace(ctx: BrokerContext, devIds: string[]): Promise<void> {
  const cl = ctx.cluster!;
  const until = Date.now() + DEFAULT_GRACE_MS;
  const live = new Map(ctx.handshake.exportGrace().map((g) => [g.devId, g]));
  for (const devId of devIds) {
    const g = live.get(devId);
    const keyId = ctx.graceKeys.get(devId);
    if (!g || !keyId) continue;
    cl.grace.note(devId, keyId, { rx: { snapshot: () => g.rx } }, until);
  }
  await cl.grace.settle();
  ctx.log.info({ devices: devIds.length }, 'QoS 1 grace state of this node\'s devices written to the cluster store');
}

/** Loopback: password logins over plain TCP from here are accepted by default. */
export const DEFAULT_LOCAL_ADDRESSES = ['127.0.0.0/8', '::1/128'];

/** A predicate for "is this remote address inside one of these CIDR blocks" (IPv4-mapped IPv6 counts as IPv4). */
export function addressMatcher(cidrs: string[]): (address: string) => boolean {
  const list = new BlockList();
  for (const c of cidrs) {
    const [net, bits] = c.split('/');
    const type = isIPv4(net ?? '') ? 'ipv4' : isIPv6(net ?? '') ? 'ipv6' : undefined;
    const prefix = bits === undefined ? (type === 'ipv4' ? 32 : 128) : Number(bits);
    if (!type || !Number.isInteger(prefix) || prefix < 0 || prefix > (type === 'ipv4' ? 32 : 128)) {
      throw new Error(`invalid address block "${c}" (expected e.g. 127.0.0.0/8 or ::1/128)`);
    }
    list.addSubnet(net!, prefix, type);
  }
  return (address) => {
    const a = address.startsWith('::ffff:') && isIPv4(address.slice(7)) ? address.slice(7) : address;
    const type = isIPv4(a) ? 'ipv4' : isIPv6(a) ? 'ipv6' : undefined;
    return type !== undefined && list.check(a, type);
  };
}
