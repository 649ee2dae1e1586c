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
 */
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { pino } from 'pino';
import memoryPersistence from 'aedes-persistence';
import { startBroker, type RunningBroker } from '../../broker/server.js';
import { Registry } from '../../broker/registry/registry.js';
import { NodeTcpTransport, FileStorage, nodeClock, nodeRandom, nodeTimer, pinoLog } from '../adapters/index.js';
import { FaultyTransport } from './faults.js';
import { SimDevice } from './sim-device.js';
import { Verifier } from './verifier.js';
import { AttackerPool, ConnectCapture, type AttackStats } from './attackers.js';
import { LatencySample, type FleetSummary } from './stats.js';
import type { LiveSnapshot } from './live-view.js';

export interface FleetOptions {
  devices: number;
  durationS: number;
  /** Readings per second across the fleet (each wake publishes 2 readings). */
  rate?: number;
  /** External broker; without it an embedded broker is started on a free port. */
  broker?: { host: string; port: number; dataDir: string };
  /** Embedded broker port (0 = free). */
  port?: number;
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
  logger?: Logger;
  onTick?: (s: LiveSnapshot) => void;
  /** Called once the broker and verifier are up (the demo prints how to watch). */
  onStarted?: (info: StartedInfo) => void;
  /** Resolves early stop (Ctrl-C): the run quiesces and summarises at once. */
  stopSignal?: Promise<void>;
}

export interface StartedInfo {
  host: string;
  port: number;
  dataDir: string;
  appUser: string;
  appPassword: string;
  embedded: boolean;
}

export interface FleetResult extends FleetSummary {
  connected_at_end: number;
  /** Sent readings unacknowledged when their node lost power (not counted as lost). */
  lost_to_power_cuts: number;
  out_of_order: number;
  malformed: number;
  broker_restarts: number;
  drops_injected: number;
  power_cuts: number;
  attacks: AttackStats;
  missing_sample: string[];
  duplicate_sample: string[];
  duration_s: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runFleet(o: FleetOptions): Promise<FleetResult> {
  const startedAt = Date.now();
  const log = o.logger ?? pino({ level: 'silent' });
  const workDir = o.workDir ?? mkdtempSync(path.join(os.tmpdir(), 'mqsec-sim-'));
  mkdirSync(workDir, { recursive: true });
  // against an external broker, fresh ids per run: a registry keeps every device it ever saw
  const prefix = o.deviceIdPrefix ?? (o.broker ? `sim${randomBytes(3).toString('hex')}` : 'node');
  const ids = Array.from({ length: o.devices }, (_, i) => `${prefix}-${String(i + 1).padStart(4, '0')}`);
  const readingsPerWake = 2;
  const rate = o.rate ?? (o.devices * readingsPerWake) / 5;
  const intervalS = Math.max(1, (o.devices * readingsPerWake) / Math.max(rate, 0.001));

  // ---- broker and provisioning ------------------------------------------------
  const embedded = !o.broker;
  const dataDir = o.broker?.dataDir ?? path.join(workDir, 'broker');
  let broker: RunningBroker | undefined;
  const brokerLog = log.child({ svc: 'broker' });
  // One message store for every incarnation of the embedded broker: a restart keeps the
  // backend's persistent session and its queued QoS 1 messages, as a durable store would.
  const persistence = memoryPersistence();
  const brokerOptions = { dataDir, host: '127.0.0.1', logger: brokerLog, revisionPollMs: 250, persistence };
  if (embedded) broker = await startBroker({ ...brokerOptions, port: o.port ?? 0 });
  const host = o.broker?.host ?? '127.0.0.1';
  let port = o.broker?.port ?? broker!.port;
  const registry = embedded ? broker!.registry : Registry.open(dataDir);
  const appUser = `verifier-${randomBytes(3).toString('hex')}`;
  const appPassword = randomBytes(12).toString('base64url');
  const keys = new Map<string, Uint8Array>();
  for (const id of ids) {
    if (registry.getDevice(id)) throw new Error(`device ${id} already exists in ${dataDir}: choose another id prefix`);
    keys.set(id, registry.addDevice(id, 'sensor').key);
  }
  await registry.addAccount(appUser, 'app', appPassword);
  if (embedded) broker!.syncRegistry();
  else registry.close();
  o.onStarted?.({ host, port, dataDir, appUser, appPassword, embedded });

  const verifier = new Verifier(`mqtt://${host}:${port}`, appUser, appPassword);
  await verifier.start();

  // ---- the fleet ----------------------------------------------------------------
  const handshakes = new LatencySample();
  let phase1 = 0;
  let phase2 = 0;
  let errors = 0;
  let dropsInjected = 0;
  let powerCuts = 0;
  let brokerRestarts = 0;
  let quiescing = false;
  const readyAfterQuiesce = new Set<string>();
  const capture = new ConnectCapture();
  const connects = new WeakMap<object, Uint8Array>();
  const faults = {
    dropProbability: o.drop ?? 0,
    latencyMs: o.latencyMs ?? 0,
    timer: nodeTimer,
    // The attackers get what an eavesdropper records: CONNECTs of connections the broker
    // accepted (CONNACK 0 seen). Replaying those must fail. (A CONNECT suppressed before it
    // reaches the broker can be delivered late, once, by an on-path attacker: see
    // docs/threat-model.md; it yields no keys.)
    tap: (dir: 'out' | 'in', bytes: Uint8Array, conn: object) => {
      if (dir === 'out') {
        if (bytes[0] === 0x10 && !connects.has(conn)) connects.set(conn, bytes);
      } else if (bytes.length >= 4 && bytes[0] === 0x20 && bytes[3] === 0) {
        const c = connects.get(conn);
        if (c) capture.offer(c);
        connects.delete(conn);
      }
    },
    onDrop: () => dropsInjected++,
  };
  const transport = new FaultyTransport(new NodeTcpTransport({ connectTimeoutMs: 5000 }), faults);
  const devices = ids.map((id) => {
    const skew = o.clockSkewMs ? Math.round((Math.random() * 2 - 1) * o.clockSkewMs) : 0;
    return new SimDevice(
      id,
      keys.get(id)!,
      new FileStorage(path.join(workDir, 'devices', id)),
      {
        host,
        port,
        timer: nodeTimer,
        clock: nodeClock,
        random: nodeRandom,
        transport,
        log: log.isLevelEnabled('debug') ? pinoLog(log.child({ dev: id })) : undefined,
        intervalS,
        sleepMode: o.sleepMode ?? 'deep',
        clockSkewMs: skew,
      },
      {
        onReady: (devId, phase, ms) => {
          if (phase === 1) phase1++;
          else phase2++;
          handshakes.add(ms);
          if (quiescing) readyAfterQuiesce.add(devId);
        },
        onSent: (_devId, topic, payload) => verifier.recordSent(topic, payload),
        onUncertain: (_devId, topic, payload) => verifier.forgive(topic, payload),
        onError: () => errors++,
      },
    );
  });

  const attackers = new AttackerPool(o.attackers ?? 0, () => ({ host, port }), capture, ids);

  const snapshot = (): LiveSnapshot => {
    const v = verifier.snapshot();
    return {
      elapsedS: (Date.now() - startedAt) / 1000,
      devices: devices.length,
      connected: devices.filter((d) => d.connected).length,
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
    };
  };

  // staggered boot: a fleet powering up together should not be one burst
  const bootSpreadMs = Math.min(3000, o.devices * 20);
  devices.forEach((d, i) => nodeTimer.set(() => d.boot('cold'), Math.floor((i / devices.length) * bootSpreadMs)));
  if (o.attackers) attackers.start();

  const timers: unknown[] = [];
  timers.push(setInterval(() => o.onTick?.(snapshot()), 500));
  if (o.powerCut && o.powerCut > 0) {
    timers.push(
      setInterval(() => {
        for (const d of devices) {
          if (Math.random() < o.powerCut!) {
            powerCuts++;
            d.powerCut(200 + Math.floor(Math.random() * 800));
          }
        }
      }, 1000),
    );
  }
  let restarting: Promise<void> = Promise.resolve();
  if (embedded && o.restartBrokerEveryS && o.restartBrokerEveryS > 0) {
    timers.push(
      setInterval(() => {
        restarting = restarting.then(async () => {
          if (quiescing) return;
          await broker!.stop();
          brokerRestarts++;
          await sleep(300);
          broker = await startBroker({ ...brokerOptions, port });
        });
      }, o.restartBrokerEveryS * 1000),
    );
  }

  await Promise.race([sleep(o.durationS * 1000), o.stopSignal ?? new Promise(() => {})]);

  // ---- quiesce ------------------------------------------------------------------
  quiescing = true;
  for (const t of timers) clearInterval(t as NodeJS.Timeout);
  await restarting;
  faults.dropProbability = 0;
  faults.latencyMs = 0;
  await attackers.stop();
  for (const d of devices) d.wakeNow();
  const quiesceUntil = Date.now() + (o.quiesceS ?? 20) * 1000;
  while (Date.now() < quiesceUntil) {
    const v = verifier.snapshot();
    if (readyAfterQuiesce.size === devices.length && v.lost === 0) break;
    o.onTick?.(snapshot());
    await sleep(200);
  }
  const final = snapshot();
  const v = verifier.snapshot();
  await Promise.all(devices.map((d) => d.stop()));
  await verifier.stop();
  if (broker) await broker.stop();
  if (!o.keepWorkDir && !o.workDir) rmSync(workDir, { recursive: true, force: true });

  return {
    devices: devices.length,
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
    lost_to_power_cuts: v.forgiven,
    out_of_order: v.outOfOrder,
    malformed: v.malformed,
    broker_restarts: brokerRestarts,
    drops_injected: dropsInjected,
    power_cuts: powerCuts,
    attacks: attackers.stats,
    missing_sample: verifier.missing(10),
    duplicate_sample: verifier.duplicateSample,
    duration_s: Math.round((Date.now() - startedAt) / 100) / 10,
  };
}
