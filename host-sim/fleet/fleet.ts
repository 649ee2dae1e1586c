/**
 * The simulated fleet: N sensor nodes running the real firmware modules
 * against an mqsec broker (embedded, or one already running), a verifying
 * backend subscriber, optional attackers, and fault injection (drops,
 * latency, broker restarts, power cuts, device clock skew).
 *
 * Shape of a run: provision -> start broker + verifier -> boot every node
 * (staggered) -> run for `durationS` with faults -> quiesce (faults off,
 * every node woken, wait until each completed a fresh secure session and
 * every acknowledged reading reached the verifier) -> summary.
 *
 * The nodes run in device groups (device-group.ts): one in the main thread
 * for a small fleet, or one per worker thread for a large one, so that the
 * nodes' handshake crypto does not compete with the broker for one event loop.
 * The main thread always keeps the broker, verifier, attackers and statistics.
 */
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { threadId } from 'node:worker_threads';
import type { Logger } from 'pino';
import { pino } from 'pino';
import memoryPersistence from 'aedes-persistence';
import { startBroker, type RunningBroker } from '../../broker/server.js';
import { openRegistry } from '../../broker/registry/open.js';
import type { ConsoleOptions } from '../../broker/console/server.js';
import { ensureAdminAccount } from '../../broker/console/admin.js';
import { DeviceGroup, type FleetGroup, type GroupConfig, type GroupDevice, type GroupEvents } from './device-group.js';
import { WorkerGroup } from './worker-group.js';
import { Verifier } from './verifier.js';
import { AttackerPool, ConnectCapture, type AttackStats } from './attackers.js';
import { LatencySample, type FleetSummary } from './stats.js';
import type { LiveSnapshot } from './live-view.js';
import type { SimNode } from './cluster-nodes.js';
import { SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { deviceTopicModes, type TopicModeRow } from './topic-modes.js';

export interface FleetOptions {
  /** Nodes the fleet provisions itself (fresh ids and keys). */
  devices: number;
  /**
   * Nodes already registered, with their keys (from device config files such
   * as the console's download or `mqsec device add --json`): run in addition
   * to `devices`, and never removed from the registry by the run.
   */
  provisioned?: { id: string; key: Uint8Array }[];
  durationS: number;
  /** Readings per second across the fleet (each wake publishes 2 readings). */
  rate?: number;
  /** External broker; without it an embedded broker is started on a free port. */
  broker?: { host: string; port: number; dataDir: string };
  /**
   * Several broker nodes sharing the registry in `dataDir` (a cluster): the
   * devices are spread over them round robin and fail over to the next node
   * when theirs does not answer (failover.ts); the verifier fails over too.
   * With `control` (nodes the run started itself, cluster-nodes.ts), `kills`
   * kill node `node` (1-based) with SIGKILL at `atS` seconds and start it
   * again `restartAfterS` later.
   */
  cluster?: {
    nodes: { host: string; port: number }[];
    dataDir: string;
    /** The key service data directory of the nodes (they run with --keyservice external): K_ks of the simulated principals goes there. */
    keyServiceData?: string;
    control?: SimNode[];
    kills?: { node: number; atS: number }[];
    restartAfterS?: number;
  };
  /**
   * The registry of the external broker or cluster is in this PostgreSQL
   * database (`--db postgres://...`); the data directory then holds the master
   * key only. Without it the registry is SQLite in that directory.
   */
  db?: string;
  /** Embedded broker port (0 = free). */
  port?: number;
  /** Serve the operator console from the embedded broker. */
  console?: ConsoleOptions;
  sleepMode?: 'deep' | 'wait';
  drop?: number;
  restartBrokerEveryS?: number;
  latencyMs?: number;
  clockSkewMs?: number;
  /** Probability per node per second of a power cut. */
  powerCut?: number;
  attackers?: number;
  /** Where device storage and the embedded broker's data live (default: a fresh temp dir). */
  workDir?: string;
  keepWorkDir?: boolean;
  /** Wait this long at the end for every node to reconnect and every reading to arrive. */
  quiesceS?: number;
  deviceIdPrefix?: string;
  /**
   * Spread the nodes' first boots over this many seconds (default: 20 ms per
   * node, at most 3 s). One reporting interval spreads the fleet's wakes evenly
   * (the demo), instead of a few bursts.
   */
  bootSpreadS?: number;
  logger?: Logger;
  onTick?: (s: LiveSnapshot) => void;
  /**
   * Worker threads to run the nodes in; 0 runs every node in the main thread.
   * Default: defaultWorkerCount(devices).
   */
  workers?: number;
  /** Called once the broker and verifier are up (the demo prints how to watch). */
  onStarted?: (info: StartedInfo) => void | Promise<void>;
  /** Resolves early stop (Ctrl-C): the run quiesces and summarises at once. */
  stopSignal?: Promise<void>;
  /**
   * End-to-end mode (docs/protocol.md §14): the embedded broker's device topic
   * rules (`sensors/%u/#` publish, `cmd/%u/#` subscribe) are set to `e2e`, the
   * nodes ask for group keys and follow each topic's mode, and the verifying
   * backend is an app principal on the SDK. Against an external broker its own
   * rules decide; the run adds the app principal (removed again at the end).
   */
  e2e?: boolean;
  /**
   * `stock` (docs/protocol.md §15): `broker` is a stock broker (Mosquitto with
   * dynamic security, RabbitMQ with HTTP auth, ...) with `mqsec keyservice
   * --flavour ...` beside it, and `broker.dataDir` that key service's data
   * directory. The nodes run the same firmware with `broker.flavour: "stock"`;
   * every device topic is end to end (role STOCK_DEVICE_ROLE), and the
   * verifying backend is an app principal (role STOCK_APP_ROLE). No password
   * account (a stock broker would not know it) and no ingest count (the
   * broker is not ours to watch).
   */
  flavour?: 'mqsec' | 'stock';
  /**
   * Restarts an external broker (whoever started it knows how: a test's
   * harness); with `restartBrokerEveryS`. The embedded broker is restarted
   * by the fleet itself.
   */
  restartExternalBroker?: () => Promise<void>;
}

/** §15: the role of the simulated devices on a stock broker: readings and commands end to end. */
export const STOCK_DEVICE_ROLE = 'simstock';
/** §15: the role of the verifying app on a stock broker: reads every reading, may send commands. */
export const STOCK_APP_ROLE = 'simstockapp';

export interface StartedInfo {
  host: string;
  port: number;
  dataDir: string;
  appUser: string;
  appPassword: string;
  embedded: boolean;
  /** The embedded broker's operator console, with the admin login created for it (if there was none). */
  console?: { url: string; certFile?: string; admin?: { name: string; password: string } };
}

export interface FleetResult extends FleetSummary {
  /** Cluster runs: secure sessions of devices that had one before, by phase (a node kill should cost phase 2 only). */
  reconnects?: { phase1: number; phase2: number; ms_p50: number | null; ms_p99: number | null };
  /** The device-side errors (each retried) by the code the node reported (`X (gave up)`: its retries ran out). */
  errors_by_code: Record<string, number>;
  /** Cluster runs: node kills and restarts done, and each node's CPU time (ms) when the run started them. */
  nodes?: { kills: number; restarts: number; cpu_ms: Record<string, number> };
  connected_at_end: number;
  /** Nodes that did not complete a fresh secure session during the quiesce (revoked ones apart). */
  not_back: string[];
  /** Sent readings unacknowledged when their node lost power (not counted as lost). */
  lost_to_power_cuts: number;
  /** Readings the broker routed, copies included (embedded broker only). */
  ingested: number;
  /** Readings the broker routed twice (device -> broker leg); embedded broker only. */
  ingest_duplicates: number;
  /** Sent readings the broker never routed (device -> broker leg); embedded broker only. */
  lost_before_broker: number | null;
  /** `duplicates` that are broker -> backend redeliveries (MQTT QoS 1 after a broker restart). */
  backend_redeliveries: number;
  out_of_order: number;
  malformed: number;
  broker_restarts: number;
  drops_injected: number;
  power_cuts: number;
  attacks: AttackStats;
  missing_sample: string[];
  duplicate_sample: string[];
  duration_s: number;
  /** Where the nodes ran: one entry per device group (thread_id 0 is the main thread). */
  groups: { thread_id: number; devices: number; sent: number }[];
  /** Device-group workers that died (their nodes stop reporting; the run still ends and summarises). */
  worker_failures: string[];
  /** Nodes revoked, removed or re-keyed in the registry during the run: not expected back, not counted as loss. */
  revoked: string[];
  /** Readings those nodes had sent but could no longer deliver. */
  held_by_revoked: number;
  /** Commands (cmd/<node>/...) the nodes received and applied. */
  commands_applied: number;
  /** Commands the run's app sent (stock runs: one `sample` a third of the way in to each node that had published by then) and those it could not send. */
  commands_sent: number;
  commands_failed: number;
  /** 'e2e' with --e2e: group keys, SDK backend. */
  mode: 'hop' | 'e2e';
  /** The broker kind (docs/protocol.md §15): the mqsec broker, or a stock broker with the key service beside it. */
  flavour: 'mqsec' | 'stock';
  /** Protection mode of each device topic rule at the end (embedded broker, or read from the registry). */
  topic_modes: TopicModeRow[];
  /** End-to-end messages the backend refused by its checks, by code (REPLAY: a copy of one it had). */
  e2e_dropped: Record<string, number>;
  /** The SDK backend's connection events (e2e mode): when it went offline and came back. */
  backend_events: string[];
}

/** Nodes one thread comfortably runs next to its share of handshake crypto. */
export const DEVICES_PER_WORKER = 300;

/**
 * Default worker threads for a fleet: none (all nodes in the main thread) up
 * to DEVICES_PER_WORKER nodes; above that one per DEVICES_PER_WORKER nodes,
 * but at most one per CPU the main thread (broker, verifier) leaves free,
 * and at least one.
 */
export function defaultWorkerCount(devices: number, cpus = os.availableParallelism()): number {
  if (devices <= DEVICES_PER_WORKER) return 0;
  return Math.max(1, Math.min(cpus - 1, Math.ceil(devices / DEVICES_PER_WORKER)));
}

/** Splits the nodes into `groups` contiguous, near-equal slices. */
export function splitIntoGroups<T>(items: T[], groups: number): T[][] {
  const n = Math.max(1, Math.min(groups, items.length));
  const out: T[][] = [];
  for (let g = 0; g < n; g++) out.push(items.slice(Math.floor((g * items.length) / n), Math.floor(((g + 1) * items.length) / n)));
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runFleet(o: FleetOptions): Promise<FleetResult> {
  const workDir = o.workDir ?? mkdtempSync(path.join(os.tmpdir(), 'mqsec-sim-'));
  mkdirSync(workDir, { recursive: true });
  try {
    return await runFleetIn(o, workDir);
  } finally {
    // on every way out, failures included: the temp dir holds an embedded broker's master key
    if (!o.keepWorkDir && !o.workDir) rmSync(workDir, { recursive: true, force: true });
  }
}

async function runFleetIn(options: FleetOptions, workDir: string): Promise<FleetResult> {
  const startedAt = Date.now();
  const provisioned = options.provisioned ?? [];
  const stock = options.flavour === 'stock';
  if (stock && (!options.broker || options.cluster)) throw new Error('a stock-broker fleet needs the broker (and its key service\'s data directory) given');
  // a cluster is an external broker as far as provisioning goes (its shared registry); its nodes are the endpoints
  const cluster = options.cluster;
  // a stock broker carries device topics end to end only (§15.1): the e2e verifier and counts
  const o = { ...options, e2e: options.e2e || stock, devices: options.devices + provisioned.length, broker: cluster ? { ...cluster.nodes[0]!, dataDir: cluster.dataDir } : options.broker };
  const log = o.logger ?? pino({ level: 'silent' });
  // against an external broker, fresh ids per run: a registry keeps every device it ever saw
  const prefix = o.deviceIdPrefix ?? (o.broker ? `sim${randomBytes(3).toString('hex')}` : 'node');
  const fresh = Array.from({ length: options.devices }, (_, i) => `${prefix}-${String(i + 1).padStart(4, '0')}`);
  const ids = [...fresh, ...provisioned.map((p) => p.id)];
  const readingsPerWake = 2;
  const rate = o.rate ?? (o.devices * readingsPerWake) / 5;
  const intervalS = Math.max(1, (o.devices * readingsPerWake) / Math.max(rate, 0.001));

  // ---- broker and provisioning ------------------------------------------------
  const embedded = !o.broker;
  const dataDir = o.broker?.dataDir ?? path.join(workDir, 'broker');
  // an external broker's or cluster's registry: SQLite in its data directory, or PostgreSQL (o.db)
  // cluster nodes run with an external key service (§14.12): K_ks of what the run provisions goes to its directory
  const openExternal = async () => {
    const ks = cluster?.keyServiceData ? SqliteKeyServiceStore.open(cluster.keyServiceData) : undefined;
    const r = await openRegistry({ dataDir, db: o.db, memberKeys: ks }).catch(async (e: unknown) => {
      await ks?.close();
      throw e;
    });
    if (!ks) return r;
    const close = r.close.bind(r);
    return Object.assign(r, { close: async () => (await close(), await ks.close()) });
  };
  // Which mode each device topic uses, read once from an external broker's registry (the
  // status line asks for it every tick; the embedded broker answers from memory).
  let externalModes: TopicModeRow[] | undefined;
  let broker: RunningBroker | undefined;
  const brokerLog = log.child({ svc: 'broker' });
  // One message store for every incarnation of the embedded broker: a restart keeps the
  // backend's persistent session and its queued QoS 1 messages, as a durable store would.
  const persistence = memoryPersistence();
  const brokerOptions = { dataDir, host: '127.0.0.1', logger: brokerLog, revisionPollMs: 250, persistence, console: o.console };
  // What the broker routes from devices (plaintext, after the envelope was opened): counts
  // duplicates on the device -> broker leg apart from backend redeliveries.
  // End to end the broker routes group envelopes it cannot read: counted by their AEAD tag
  // (unique per envelope), so a copy routed twice (a resend after a lost PUBACK, which the
  // backend then drops as REPLAY) is visible here too. Bounded for endless runs.
  const e2eRouted = { total: 0, copies: 0, seen: new Set<string>() };
  const observeIngest = (b: RunningBroker) =>
    b.aedes.on('publish', (packet: { topic: string; payload: Buffer | string }, client: unknown) => {
      if (!client || !packet.topic.startsWith('sensors/')) return;
      const p = packet.payload;
      if (o.e2e) {
        if (typeof p === 'string' || p.length < 16) return;
        const id = `${packet.topic}|${p.subarray(p.length - 16).toString('base64')}`;
        e2eRouted.total++;
        if (e2eRouted.seen.has(id)) e2eRouted.copies++;
        else if (e2eRouted.seen.size < 1_000_000) e2eRouted.seen.add(id);
        return;
      }
      ingestSink.verifier?.recordIngested(packet.topic, typeof p === 'string' ? new TextEncoder().encode(p) : new Uint8Array(p));
    });
  const ingestSink: { verifier?: Verifier } = {};
  if (embedded) observeIngest((broker = await startBroker({ ...brokerOptions, port: o.port ?? 0 })));
  const host = o.broker?.host ?? '127.0.0.1';
  let port = o.broker?.port ?? broker!.port;
  const appUser = `verifier-${randomBytes(3).toString('hex')}`;
  const appPassword = randomBytes(12).toString('base64url');
  const keys = new Map<string, Uint8Array>();
  // What this run added to an operator's registry (external broker): removed again at the
  // end, so no simulated device or plaintext-reading account outlives the run.
  const created = { devices: [] as string[], account: false };
  const removeCreated = async () => {
    if (embedded || (created.devices.length === 0 && !created.account)) return;
    const r = await openExternal();
    try {
      for (const id of created.devices.splice(0)) if (await r.getDevice(id)) await r.removeDevice(id);
      if (created.account && (await r.getAccount(appUser))) await r.removeAccount(appUser);
      created.account = false;
    } finally {
      await r.close();
    }
  };
  const verifier = new Verifier(`mqtt://${host}:${port}`, appUser, appPassword, cluster?.nodes);
  try {
    const registry = embedded ? broker!.registry : await openExternal();
    try {
      if (stock) {
        // the run's roles, made once in the key service's registry and kept (like `sensor` and `app`)
        if (!(await registry.getRole(STOCK_DEVICE_ROLE))) {
          await registry.addRole(STOCK_DEVICE_ROLE);
          await registry.addRule(STOCK_DEVICE_ROLE, 'publish', 'sensors/%u/#', 'e2e');
          await registry.addRule(STOCK_DEVICE_ROLE, 'subscribe', 'cmd/%u/#', 'e2e');
        }
        if (!(await registry.getRole(STOCK_APP_ROLE))) {
          await registry.addRole(STOCK_APP_ROLE);
          await registry.addRule(STOCK_APP_ROLE, 'subscribe', 'sensors/#');
          await registry.addRule(STOCK_APP_ROLE, 'publish', 'cmd/#');
        }
      }
      for (const id of fresh) {
        if (await registry.getDevice(id)) throw new Error(`device ${id} already exists in ${dataDir}: choose another id prefix`);
        keys.set(id, (await registry.addDevice(id, stock ? STOCK_DEVICE_ROLE : 'sensor')).key);
        created.devices.push(id);
      }
      for (const p of provisioned) {
        if (keys.has(p.id)) throw new Error(`device ${p.id} given twice`);
        keys.set(p.id, p.key);
      }
      if (!stock) {
        await registry.addAccount(appUser, 'app', appPassword);
        created.account = true;
      }
      if (o.e2e) {
        if (embedded) {
          // §14.1: readings and commands end to end (hop stays the default elsewhere)
          await registry.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
          await registry.addRule('sensor', 'subscribe', 'cmd/%u/#', 'e2e');
        }
        // the verifying backend joins as an app principal: only members get group keys
        const appId = `${appUser}-e2e`;
        verifier.asApp = { id: appId, key: (await registry.addDevice(appId, stock ? STOCK_APP_ROLE : 'app')).key, flavour: stock ? 'stock' : 'mqsec' };
        created.devices.push(appId);
      }
      if (!embedded) externalModes = deviceTopicModes(await registry.listRoles(), undefined, stock ? STOCK_DEVICE_ROLE : 'sensor');
    } finally {
      if (!embedded) await registry.close();
    }
    const consoleInfo = broker?.console && { url: broker.console.url, certFile: broker.console.certFile, admin: await ensureAdminAccount(broker.registry) };
    if (embedded) await broker!.syncRegistry();
    await o.onStarted?.({ host, port, dataDir, appUser, appPassword, embedded, console: consoleInfo });
    ingestSink.verifier = verifier;
    await verifier.start();
  } catch (e) {
    await verifier.stop();
    await broker?.stop().catch(() => {});
    await removeCreated();
    throw e;
  }

  // ---- the fleet ----------------------------------------------------------------
  const handshakes = new LatencySample();
  let phase1 = 0;
  let phase2 = 0;
  let errors = 0;
  let dropsInjected = 0;
  let powerCuts = 0;
  let brokerRestarts = 0;
  let commandsApplied = 0;
  let commandsOut = 0;
  const publishedFrom = new Set<string>();
  let commandFailures = 0;
  let lastCommand: string | undefined;
  let quiescing = false;
  const readyAfterQuiesce = new Set<string>();
  const hadSession = new Set<string>();
  const reconnects = { phase1: 0, phase2: 0 };
  const reconnectMs = new LatencySample();
  const errorCodes = new Map<string, number>();
  const nodeEvents = { kills: 0, restarts: 0 };
  const workerFailures: string[] = [];
  const capture = new ConnectCapture();

  // staggered boot: a fleet powering up together should not be one burst
  // (a cluster's nodes each take 50 phase-1 logins/s from one address, and every simulated device is on this host)
  const bootSpreadMs =
    o.bootSpreadS !== undefined ? o.bootSpreadS * 1000 : cluster ? Math.ceil((o.devices / (40 * cluster.nodes.length)) * 1000) : Math.min(3000, o.devices * 20);
  const groupDevices: GroupDevice[] = ids.map((id, i) => ({
    id,
    key: keys.get(id)!,
    bootDelayMs: Math.floor((i / ids.length) * bootSpreadMs),
    clockSkewMs: o.clockSkewMs ? Math.round((Math.random() * 2 - 1) * o.clockSkewMs) : 0,
  }));
  const groupConfig = (devices: GroupDevice[]): GroupConfig => ({
    host,
    port,
    workDir,
    intervalS,
    sleepMode: o.sleepMode ?? 'deep',
    groupKeys: o.e2e ?? false,
    flavour: stock ? 'stock' : 'mqsec',
    devices,
    faults: { dropProbability: o.drop ?? 0, latencyMs: o.latencyMs ?? 0, powerCut: o.powerCut ?? 0 },
    nodes: cluster?.nodes,
    nodeOffset: devices.length ? groupDevices.indexOf(devices[0]!) : 0,
  });
  const groupSent: number[] = [];
  const groupEvents = (index: number): GroupEvents => {
    groupSent[index] = 0;
    return {
      sent: (topic, payload) => {
        groupSent[index]++;
        if (stock) publishedFrom.add(topic.split('/')[1] ?? '');
        verifier.recordSent(topic, payload);
      },
      uncertain: (topic, payload) => verifier.forgive(topic, payload),
      ready: (devId, phase, ms, afterQuiesce) => {
        if (phase === 1) phase1++;
        else phase2++;
        if (hadSession.has(devId)) {
          reconnects[phase === 1 ? 'phase1' : 'phase2']++;
          reconnectMs.add(ms);
        }
        else hadSession.add(devId);
        handshakes.add(ms);
        if (afterQuiesce) readyAfterQuiesce.add(devId);
      },
      error: (_devId: string, code?: string) => {
        errors++;
        errorCodes.set(code ?? '?', (errorCodes.get(code ?? '?') ?? 0) + 1);
      },
      drop: () => dropsInjected++,
      powerCut: () => powerCuts++,
      command: (devId, name, value) => {
        commandsApplied++;
        lastCommand = `${devId} ${name}=${value} at t=${Math.round((Date.now() - startedAt) / 1000)}s`;
      },
      capture: (connect) => capture.offer(connect),
    };
  };
  const workerCount = Math.min(o.workers ?? defaultWorkerCount(o.devices), o.devices);
  let groups: FleetGroup[];
  if (workerCount > 0) {
    const spawned = await Promise.allSettled(
      splitIntoGroups(groupDevices, workerCount).map((slice, i) =>
        WorkerGroup.spawn(groupConfig(slice), groupEvents(i), o.logger ? o.logger.level : 'silent', (m) => workerFailures.push(m)),
      ),
    );
    const failed = spawned.find((r) => r.status === 'rejected');
    if (failed) {
      await Promise.all(spawned.map((r) => (r.status === 'fulfilled' ? r.value.stop() : undefined)));
      await verifier.stop();
      if (broker) await broker.stop();
      await removeCreated();
      throw (failed as PromiseRejectedResult).reason;
    }
    groups = spawned.map((r) => (r as PromiseFulfilledResult<WorkerGroup>).value);
  } else {
    groups = [new DeviceGroup(groupConfig(groupDevices), groupEvents(0), threadId, log)];
  }
  const connectedNow = () => groups.reduce((n, g) => n + g.connectedCount(), 0);

  const attackers = new AttackerPool(o.attackers ?? 0, () => ({ host, port }), capture, ids, undefined, stock ? 'stock' : 'mqsec');

  // Which mode each device topic uses: the policy's rules, and the key service's groups behind
  // the e2e ones (embedded broker); read from the registry once for an external broker.
  const topicModes = (): TopicModeRow[] => {
    if (broker) return deviceTopicModes([...broker.context.roles.values()], broker.context.keyService?.list());
    return externalModes ?? [];
  };

  const snapshot = (): LiveSnapshot => {
    const v = verifier.snapshot();
    return {
      elapsedS: (Date.now() - startedAt) / 1000,
      devices: o.devices,
      connected: connectedNow(),
      phase1,
      phase2,
      sent: v.sent,
      verified: v.verified,
      lost: v.lost,
      duplicates: v.duplicates,
      errors,
      p50: handshakes.percentile(50),
      p99: handshakes.percentile(99),
      attacksRejected: o.attackers ? attackers.stats.refused : undefined,
      brokerRestarts,
      intervalS: (o.sleepMode ?? 'deep') === 'deep' ? intervalS : undefined,
      commandsApplied,
      lastCommand,
      topicModes: topicModes(),
      e2eDropped: o.e2e ? { ...verifier.e2eDropped } : undefined,
    };
  };

  // Nodes revoked, removed or re-keyed by an operator while the run goes on (`mqsec device revoke`).
  const revoked = new Set<string>();
  const noteRevoked = async () => {
    const r = embedded ? broker!.registry : await openExternal();
    try {
      for (const id of ids) {
        if (revoked.has(id)) continue;
        const d = await r.getDevice(id);
        if (!d || d.status !== 'active' || d.keyVersion !== 1) {
          revoked.add(id);
          verifier.markRevoked(id);
        }
      }
    } finally {
      if (!embedded) await r.close();
    }
  };

  const timers: unknown[] = [];
  try {
    return await runGroups();
  } catch (e) {
    // an unexpected failure (e.g. the broker cannot restart): worker threads and sockets must not outlive the run
    for (const t of timers) clearInterval(t as NodeJS.Timeout);
    await attackers.stop().catch(() => {});
    await Promise.all(groups.map((g) => g.stop().catch(() => {})));
    await verifier.stop().catch(() => {});
    await broker?.stop().catch(() => {});
    await removeCreated();
    throw e;
  }

  async function runGroups(): Promise<FleetResult> {
    for (const g of groups) g.start();
    if (o.attackers) attackers.start();

    timers.push(setInterval(() => o.onTick?.(snapshot()), 500));
    let restarting: Promise<void> = Promise.resolve();
    const restartExternal = o.restartExternalBroker;
    if ((embedded || restartExternal) && o.restartBrokerEveryS && o.restartBrokerEveryS > 0) {
      timers.push(
        setInterval(() => {
          restarting = restarting.then(async () => {
            if (quiescing) return;
            if (restartExternal) {
              await restartExternal();
              brokerRestarts++;
              return;
            }
            await broker!.stop();
            brokerRestarts++;
            await sleep(300);
            observeIngest((broker = await startBroker({ ...brokerOptions, port })));
          });
        }, o.restartBrokerEveryS * 1000),
      );
    }

    // cluster: kill -9 a node at its time, start it again a little later (it rejoins)
    const nodeOps: Promise<void>[] = [];
    for (const k of cluster?.control ? (cluster.kills ?? []) : []) {
      const node = cluster!.control![k.node - 1];
      if (!node) throw new Error(`--kill-node ${k.node}: there are ${cluster!.control!.length} nodes`);
      const t = setTimeout(() => {
        nodeOps.push(
          (async () => {
            log.info({ node: node.id, pid: node.pid() }, 'killing node (SIGKILL)');
            await node.kill();
            nodeEvents.kills++;
            await sleep((cluster!.restartAfterS ?? 5) * 1000);
            await node.start();
            nodeEvents.restarts++;
            log.info({ node: node.id, pid: node.pid() }, 'node restarted');
          })(),
        );
      }, k.atS * 1000);
      timers.push(t);
    }

    // §15.12: on a stock broker the app asks every node for an extra reading a third of the way in: end-to-end commands,
    // queued by the broker for sleeping nodes and applied at their next wake (held until their keys arrive)
    const commandsSent: Promise<unknown>[] = [];
    if (stock && Number.isFinite(o.durationS)) {
      timers.push(
        setTimeout(() => {
          // only to nodes that already published, so subscribed to their commands (MQTT: a message before the subscription is not kept)
          for (const id of fresh.filter((x) => publishedFrom.has(x))) commandsSent.push(verifier.command(id, 'sample', '').then(() => commandsOut++, () => commandFailures++));
        }, (o.durationS * 1000) / 3),
      );
    }

    // an unbounded run (the demo) ends only on the stop signal; timers cannot wait past ~24.8 days
    const runFor = Number.isFinite(o.durationS) && o.durationS * 1000 < 2 ** 31 - 1 ? sleep(o.durationS * 1000) : new Promise<void>(() => {});
    await Promise.race([runFor, o.stopSignal ?? new Promise(() => {})]);

    // ---- quiesce ------------------------------------------------------------------
    quiescing = true;
    for (const t of timers) clearInterval(t as NodeJS.Timeout);
    await restarting;
    await Promise.all(nodeOps);
    await Promise.all(commandsSent);
    for (const g of groups) g.quiesce();
    await attackers.stop();
    for (const g of groups) g.wakeAll();
    const quiesceUntil = Date.now() + (o.quiesceS ?? 20) * 1000;
    while (Date.now() < quiesceUntil) {
      // every reading a worker's node sent so far is recorded before the verifier is asked
      await Promise.all(groups.map((g) => g.flush()));
      // a node the registry no longer accepts will not come back: wait for the others only
      await noteRevoked();
      const v = verifier.snapshot();
      if ([...readyAfterQuiesce].filter((id) => !revoked.has(id)).length === o.devices - revoked.size && v.lost === 0) break;
      o.onTick?.(snapshot());
      await sleep(200);
    }
    // Stop producing: every node shuts down cleanly (a clean close waits for its outstanding
    // PUBACKs) and reports its last events; then deliveries still on their way to the
    // backend settle, so `lost` counts only what really never arrived.
    await Promise.all(groups.map((g) => g.stop()));
    await noteRevoked();
    const sentByGroup = [...groupSent];
    const settleUntil = Date.now() + 10_000;
    while (verifier.snapshot().lost > 0 && Date.now() < settleUntil) await sleep(100);
    const final = snapshot();
    const v = verifier.snapshot();
    const modes = topicModes();
    await verifier.stop();
    if (broker) await broker.stop();
    await removeCreated();

    return {
      devices: o.devices,
      phase1_ok: phase1,
      phase2_ok: phase2,
      sent: v.sent,
      verified: v.verified,
      lost: v.lost,
      duplicates: v.duplicates,
      errors,
      handshake_ms_p50: final.p50,
      handshake_ms_p99: final.p99,
      connected_at_end: readyAfterQuiesce.size,
      not_back: ids.filter((id) => !readyAfterQuiesce.has(id) && !revoked.has(id)).slice(0, 20),
      errors_by_code: Object.fromEntries(errorCodes),
      lost_to_power_cuts: v.forgiven,
      ingested: o.e2e ? e2eRouted.total : v.ingested,
      ingest_duplicates: o.e2e ? e2eRouted.copies : v.ingestDuplicates,
      // end to end the broker cannot tell which reading an envelope holds: the backend's count is the check
      lost_before_broker: embedded && !o.e2e ? v.notIngested : null,
      backend_redeliveries: o.e2e ? 0 : Math.max(0, v.duplicates - v.ingestDuplicates),
      out_of_order: v.outOfOrder,
      malformed: v.malformed,
      broker_restarts: brokerRestarts,
      drops_injected: dropsInjected,
      power_cuts: powerCuts,
      attacks: attackers.stats,
      missing_sample: verifier.missing(10),
      duplicate_sample: verifier.duplicateSample,
      duration_s: Math.round((Date.now() - startedAt) / 100) / 10,
      groups: groups.map((g, i) => ({ thread_id: g.threadId, devices: g.deviceCount, sent: sentByGroup[i] })),
      worker_failures: workerFailures,
      revoked: [...revoked],
      commands_applied: commandsApplied,
      commands_sent: commandsOut,
      commands_failed: commandFailures,
      held_by_revoked: v.heldByRevoked,
      ...(cluster
        ? {
            reconnects: { ...reconnects, ms_p50: reconnectMs.percentile(50), ms_p99: reconnectMs.percentile(99) },
            nodes: { ...nodeEvents, cpu_ms: Object.fromEntries((cluster.control ?? []).map((n) => [n.id, Math.round(n.cpuMs())])) },
          }
        : stock
          ? // §15: what a broker restart costs a stock deployment: phase-2 reconnects, or phase 1 again
            { reconnects: { ...reconnects, ms_p50: reconnectMs.percentile(50), ms_p99: reconnectMs.percentile(99) } }
          : {}),
      mode: o.e2e ? 'e2e' : 'hop',
      flavour: stock ? 'stock' : 'mqsec',
      topic_modes: modes,
      e2e_dropped: { ...verifier.e2eDropped },
      backend_events: verifier.backendEvents.slice(),
    };
  }
}
