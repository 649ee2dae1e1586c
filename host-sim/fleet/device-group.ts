/**
 * A group of simulated nodes that share one event loop: the main thread of a
 * small fleet, or one worker thread of a large one (group-worker.ts). Both
 * run this same code; only where the events go differs (straight to the
 * verifier, or batched over the worker's message port).
 *
 * The group owns what is per node: the SimDevices, their fault-injecting
 * transport, the staggered boot and the power cuts. The fleet keeps what is
 * shared: the broker, the verifier, the attackers and the statistics.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import { NodeTcpTransport, FileStorage, nodeClock, nodeRandom, nodeTimer, pinoLog } from '../adapters/index.js';
import { FaultyTransport, type FaultOptions } from './faults.js';
import { FailoverTransport } from './failover.js';
import { SimDevice } from './sim-device.js';

/** One node of a group, as the fleet provisioned it. */
export interface GroupDevice {
  id: string;
  key: Uint8Array;
  /** Delay of the first (cold) boot, so that a fleet powering up is not one burst. */
  bootDelayMs: number;
  /** Device clock offset (ms). */
  clockSkewMs: number;
}

/** The faults the fleet can change while it runs. */
export interface GroupFaults {
  /** Probability that an outgoing write cuts the connection instead. */
  dropProbability: number;
  /** One-way latency added to every device connection. */
  latencyMs: number;
  /** Probability per node per second of a power cut. */
  powerCut: number;
}

/** Everything a group needs to run; structured-cloneable, so it can be a worker's workerData. */
export interface GroupConfig {
  host: string;
  port: number;
  /** Device storage lives in `<workDir>/devices/<id>`. */
  workDir: string;
  intervalS: number;
  sleepMode: 'deep' | 'wait';
  /** Nodes ask the key service for group keys after every session (docs/protocol.md §14), as the firmware does by default. */
  groupKeys?: boolean;
  /** `broker.flavour` of the nodes' device config (docs/protocol.md §15): `stock` for a stock broker. */
  flavour?: 'mqsec' | 'stock';
  devices: GroupDevice[];
  faults: GroupFaults;
  /** Several broker nodes (a cluster): devices spread over them and fail over (failover.ts); host/port unused then. */
  nodes?: { host: string; port: number }[];
  /** Index of this group's first device in the fleet (the round robin over `nodes` is fleet-wide). */
  nodeOffset?: number;
}

/** What a group reports to the fleet. */
export interface GroupEvents {
  /** A node handed a reading to its secure link (QoS 1). */
  sent(topic: string, payload: Uint8Array): void;
  /** A sent reading was still unacknowledged when its node lost power. */
  uncertain(topic: string, payload: Uint8Array): void;
  /** A node completed a secure session; `afterQuiesce` once the fleet has started quiescing this group. */
  ready(devId: string, phase: 1 | 2, ms: number, afterQuiesce: boolean): void;
  error(devId: string, code: string): void;
  drop(): void;
  powerCut(): void;
  /** A node applied a command it received (cmd/<id>/<name>). */
  command(devId: string, name: string, value: string): void;
  /** A CONNECT the broker accepted (CONNACK 0 seen): what an eavesdropper records, for the attackers. */
  capture(connect: Uint8Array): void;
}

/** The fleet's handle on a group, whether it runs inline or in a worker thread. */
export interface FleetGroup {
  readonly deviceCount: number;
  /** Thread the group's nodes run in (0 is the main thread). */
  readonly threadId: number;
  /** Nodes currently connected with a secure session (as last reported). */
  connectedCount(): number;
  start(): void;
  setFaults(faults: Partial<GroupFaults>): void;
  /** Faults and power cuts off; readiness from now on counts as "after quiesce". */
  quiesce(): void;
  /** Wakes every sleeping or powered-off node now. */
  wakeAll(): void;
  /** Resolves once every event the group produced so far has reached the fleet. */
  flush(): Promise<void>;
  stop(): Promise<void>;
}

export class DeviceGroup implements FleetGroup {
  readonly devices: SimDevice[];
  private readonly faults: FaultOptions & GroupFaults;
  private quiescing = false;
  private powerCutTimer: ReturnType<typeof setInterval> | undefined;
  private readonly bootTimers = new Set<ReturnType<typeof setTimeout>>();
  /** CONNECT bytes per connection until the broker's CONNACK tells whether it was accepted. */
  private readonly connects = new WeakMap<object, Uint8Array>();

  constructor(
    private readonly config: GroupConfig,
    private readonly events: GroupEvents,
    readonly threadId: number,
    logger?: Logger,
  ) {
    this.faults = {
      ...config.faults,
      timer: nodeTimer,
      // The attackers get what an eavesdropper records: CONNECTs of connections the broker
      // accepted (CONNACK 0 seen). Replaying those must fail. (A CONNECT suppressed before it
      // reaches the broker can be delivered late, once, by an on-path attacker: see
      // docs/threat-model.md; it yields no keys.)
      tap: (dir, bytes, conn) => {
        if (dir === 'out') {
          if (bytes[0] === 0x10 && !this.connects.has(conn)) this.connects.set(conn, bytes);
        } else if (bytes.length >= 4 && bytes[0] === 0x20 && bytes[3] === 0) {
          const c = this.connects.get(conn);
          if (c) events.capture(c);
          this.connects.delete(conn);
        }
      },
      onDrop: () => events.drop(),
    };
    const tcp = new NodeTcpTransport({ connectTimeoutMs: 5000 });
    const nodes = config.nodes;
    // several broker nodes: each device starts on its own (round robin over the fleet) and fails over
    const transportFor = (i: number) =>
      new FaultyTransport(nodes && nodes.length > 1 ? new FailoverTransport(tcp, nodes, (config.nodeOffset ?? 0) + i) : tcp, this.faults);
    const debug = logger?.isLevelEnabled('debug') ? logger : undefined;
    this.devices = config.devices.map(
      (d, i) =>
        new SimDevice(
          d.id,
          d.key,
          new FileStorage(path.join(config.workDir, 'devices', d.id)),
          {
            host: config.host,
            port: config.port,
            timer: nodeTimer,
            clock: nodeClock,
            random: nodeRandom,
            transport: transportFor(i),
            log: debug ? pinoLog(debug.child({ dev: d.id })) : undefined,
            intervalS: config.intervalS,
            sleepMode: config.sleepMode,
            groupKeys: config.groupKeys,
            flavour: config.flavour,
            clockSkewMs: d.clockSkewMs,
          },
          {
            onReady: (devId, phase, ms) => events.ready(devId, phase, ms, this.quiescing),
            onSent: (_devId, topic, payload) => events.sent(topic, payload),
            onUncertain: (_devId, topic, payload) => events.uncertain(topic, payload),
            onError: (devId, code) => events.error(devId, code),
            onCommand: (devId, name, value) => events.command(devId, name, value),
          },
        ),
    );
  }

  get deviceCount(): number {
    return this.devices.length;
  }

  connectedCount(): number {
    let n = 0;
    for (const d of this.devices) if (d.connected) n++;
    return n;
  }

  start(): void {
    this.config.devices.forEach((d, i) => {
      const t = setTimeout(() => {
        this.bootTimers.delete(t);
        this.devices[i].boot('cold');
      }, d.bootDelayMs);
      this.bootTimers.add(t);
    });
    this.setFaults({});
  }

  setFaults(f: Partial<GroupFaults>): void {
    if (f.dropProbability !== undefined) this.faults.dropProbability = f.dropProbability;
    if (f.latencyMs !== undefined) this.faults.latencyMs = f.latencyMs;
    if (f.powerCut !== undefined) this.faults.powerCut = f.powerCut;
    const p = this.faults.powerCut;
    if (p > 0 && !this.powerCutTimer) {
      this.powerCutTimer = setInterval(() => {
        for (const d of this.devices) {
          if (Math.random() < this.faults.powerCut) {
            this.events.powerCut();
            d.powerCut(200 + Math.floor(Math.random() * 800));
          }
        }
      }, 1000);
    } else if (p <= 0 && this.powerCutTimer) {
      clearInterval(this.powerCutTimer);
      this.powerCutTimer = undefined;
    }
  }

  quiesce(): void {
    this.quiescing = true;
    this.setFaults({ dropProbability: 0, latencyMs: 0, powerCut: 0 });
  }

  wakeAll(): void {
    // a node whose first boot is still pending boots now, so that it too can be counted
    for (const t of this.bootTimers) clearTimeout(t);
    this.bootTimers.clear();
    for (const d of this.devices) {
      if (d.boots === 0) d.boot('cold');
      else d.wakeNow();
    }
  }

  async flush(): Promise<void> {
    // inline: every event already reached the fleet synchronously
  }

  async stop(): Promise<void> {
    this.setFaults({ powerCut: 0 });
    for (const t of this.bootTimers) clearTimeout(t);
    this.bootTimers.clear();
    await Promise.all(this.devices.map((d) => d.stop()));
  }
}
