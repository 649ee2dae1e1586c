/**
 * One simulated ESP32 sensor node running the real firmware modules
 * (firmware/app SensorNode, firmware/secure DeviceSecureSession, the glue
 * SecureMqttClient and firmware/mqtt MqttClient) on host-sim adapters.
 *
 * Life like on hardware: boot -> phase 1 -> readings -> deep sleep (all RAM
 * state dropped: a new Incarnation, a new SensorNode and session object) ->
 * wake -> phase 2. Storage (the NVS stand-in) is the only thing that survives
 * a sleep or a power cut.
 */
import type { Clock, Log, Random, Storage, Timer, Transport } from '../../firmware/core/platform.js';
import { MqsecError } from '../../firmware/core/errors.js';
import { silentLog } from '../../firmware/core/platform.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { DeviceSecureSession } from '../../firmware/secure/index.js';
import { GroupKeyring, deriveKeyServiceKey } from '../../firmware/secure/group.js';
import { counterBlockFor, createDeviceLink } from '../../firmware/app/device-link.js';
import { SensorNode, type NodeState } from '../../firmware/app/sensor-node.js';
import type { Reading, SecureLink, Sensor, Sleep, WakeCause } from '../../firmware/app/ports.js';
import { Incarnation } from './incarnation.js';

export interface SimDeviceEnv {
  host: string;
  port: number;
  timer: Timer;
  clock: Clock;
  random: Random;
  transport: Transport;
  log?: Log;
  /** Seconds between readings. */
  intervalS: number;
  sleepMode: 'deep' | 'wait';
  /**
   * Ask the key service for group keys after every session and follow each
   * topic's mode (docs/protocol.md §14), as the firmware does by default
   * (firmware/platform/moddable/main.ts, board setting `groupKeys`).
   */
  groupKeys?: boolean;
  /**
   * `broker.flavour` of the device config: `stock` for a stock broker with the
   * key service beside it (docs/protocol.md §15; group keys are then always on).
   */
  flavour?: 'mqsec' | 'stock';
  /** Device clock offset (ms): the protocol must not care. */
  clockSkewMs?: number;
  listenMs?: number;
  stepTimeoutMs?: number;
  retry?: { attempts?: number; baseMs?: number; maxMs?: number };
}

export interface SimDeviceEvents {
  onState?(devId: string, state: NodeState, detail?: string): void;
  /** A reading handed to the secure link (QoS 1). */
  onSent?(devId: string, topic: string, payload: Uint8Array): void;
  /** A sent reading still unacknowledged when the node lost power (it may or may not have arrived). */
  onUncertain?(devId: string, topic: string, payload: Uint8Array): void;
  onReady?(devId: string, phase: 1 | 2, ms: number): void;
  onError?(devId: string, code: string): void;
  /** The node received a command (cmd/<id>/<name>) and applied it. */
  onCommand?(devId: string, name: string, value: string): void;
}

/** A simulated temperature/humidity sensor: a slow random walk per device. */
export class SimulatedSensor implements Sensor {
  private t = 20 + Math.random() * 5;
  private h = 40 + Math.random() * 20;
  async read(): Promise<Reading[]> {
    this.t += (Math.random() - 0.5) * 0.4;
    this.h = Math.min(100, Math.max(0, this.h + (Math.random() - 0.5)));
    return [
      { kind: 'temperature', value: Math.round(this.t * 100) / 100, unit: 'C' },
      { kind: 'humidity', value: Math.round(this.h * 10) / 10, unit: '%' },
    ];
  }
}

export class SimDevice {
  private incarnation: Incarnation | undefined;
  private node: SensorNode | undefined;
  private wakeTimer: unknown;
  private bootCount = 0;
  private connectStartedAt = 0;
  state: NodeState | 'off' = 'off';
  connected = false;
  stopped = false;
  readonly sensor = new SimulatedSensor();
  /** Readings of this power-on whose first publish was not acknowledged (the outbox retries them). */
  private unacked = new Set<{ topic: string; payload: Uint8Array }>();

  constructor(
    readonly devId: string,
    private readonly deviceKey: Uint8Array,
    private readonly storage: Storage,
    private readonly env: SimDeviceEnv,
    private readonly events: SimDeviceEvents = {},
  ) {}

  get boots(): number {
    return this.bootCount;
  }

  /** Powers the node on (cold boot) or wakes it from deep sleep. */
  boot(cause: WakeCause = 'cold'): void {
    if (this.stopped) return;
    this.clearWake();
    this.incarnation?.end();
    this.unacked = new Set();
    const inc = new Incarnation(this.env.timer, this.env.transport);
    const storage = inc.storage(this.storage);
    this.incarnation = inc;
    this.bootCount++;
    const log = this.env.log ?? silentLog;
    const skew = this.env.clockSkewMs ?? 0;
    const clock: Clock = { now: () => this.env.clock.now() + skew };
    const suite = createNobleSuite(this.env.random);
    const session = new DeviceSecureSession({ suite, devId: this.devId, deviceKey: this.deviceKey, storage, clock, log, counterBlock: counterBlockFor(this.env.flavour) });
    // RAM state like the session: a wake starts with no group keys and asks for them (§14.6)
    const keyring = this.env.groupKeys || this.env.flavour === 'stock' ? new GroupKeyring({ suite, id: this.devId, keyServiceKey: deriveKeyServiceKey(suite, this.deviceKey, this.devId) }) : undefined;
    // the same sensor node on either broker: only the link differs (firmware/app/device-link.ts)
    const link = createDeviceLink({
      id: this.devId,
      flavour: this.env.flavour,
      endpoint: { host: this.env.host, port: this.env.port },
      suite,
      session,
      keyring,
      deviceKey: this.deviceKey,
      services: { transport: inc.transport, timer: inc.timer, clock, random: this.env.random, log },
      log,
      keepaliveSec: 30,
      connectTimeoutMs: 5000,
      onReady: (phase) => {
        if (inc.isAlive) this.events.onReady?.(this.devId, phase, this.env.clock.now() - this.connectStartedAt);
      },
    });
    const observedLink: SecureLink = {
      open: (ev) => {
        this.connectStartedAt = this.env.clock.now();
        return link.open({
          ...ev,
          onMessage: (topic, payload) => {
            // the node applies a command synchronously; refused ones do not count
            const before = node.stats.commands;
            ev.onMessage(topic, payload);
            if (inc.isAlive && node.stats.commands > before) {
              this.events.onCommand?.(this.devId, topic.slice(topic.lastIndexOf('/') + 1), new TextDecoder().decode(payload).slice(0, 32));
            }
          },
        });
      },
      publish: async (topic, payload, qos) => {
        // The chip is off: code of a powered-down incarnation still settling its promises
        // must not count as sending anything (on hardware it would not run at all).
        if (!inc.isAlive) throw new MqsecError('NOT_CONNECTED', 'powered down');
        const unacked = this.unacked; // this power-on's set: a power cut forgives exactly these
        const entry = { topic, payload };
        unacked.add(entry);
        this.events.onSent?.(this.devId, topic, payload);
        await link.publish(topic, payload, qos);
        // a rejected publish stays in the link's outbox and is retried on the next connection
        unacked.delete(entry);
      },
      subscribe: (f) => link.subscribe(f),
      close: () => link.close(),
      unacknowledged: () => link.unacknowledged?.() ?? 0,
    };
    const sleep: Sleep = {
      deepSleepSupported: true,
      deepSleep: (ms) => {
        // The chip powers down: RAM (this incarnation) is gone, a timer wakes a new one.
        inc.end();
        this.connected = false;
        this.state = 'sleeping';
        if (!this.stopped) this.wakeTimer = this.env.timer.set(() => this.boot('timer'), ms);
      },
      wakeCause: () => cause,
    };
    const node = new SensorNode({
      devId: this.devId,
      link: observedLink,
      network: { connect: async () => {} },
      sensor: this.sensor,
      sleep,
      storage,
      timer: inc.timer,
      random: this.env.random,
      log,
      defaults: { intervalS: this.env.intervalS, sleepMode: this.env.sleepMode },
      listenMs: this.env.listenMs ?? 300,
      stepTimeoutMs: this.env.stepTimeoutMs ?? 10_000,
      retry: { attempts: 8, baseMs: 500, maxMs: 4000, ...this.env.retry },
      giveUpSleepMs: 5000,
      onState: (state, detail) => {
        if (!inc.isAlive) return;
        this.state = state;
        this.connected = state === 'subscribing' || state === 'publishing' || state === 'listening' || state === 'waiting';
        if (state === 'backoff' && detail) this.events.onError?.(this.devId, errorCodeOf(detail));
        this.events.onState?.(this.devId, state, detail);
      },
    });
    this.node = node;
    void node.start();
  }

  /** Power cut: everything in RAM is lost mid-step; boots again after `offMs`. */
  powerCut(offMs: number): void {
    if (this.stopped) return;
    this.clearWake();
    this.incarnation?.end();
    for (const r of this.unacked) this.events.onUncertain?.(this.devId, r.topic, r.payload);
    this.unacked = new Set();
    this.connected = false;
    this.state = 'off';
    this.wakeTimer = this.env.timer.set(() => this.boot('cold'), offMs);
  }

  /** Wakes a sleeping node now (used at the end of a run to check every node still gets in). */
  wakeNow(): void {
    if (this.state === 'sleeping' || this.state === 'off') this.boot('timer');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clearWake();
    const node = this.node;
    const inc = this.incarnation;
    if (node && inc?.isAlive) {
      await Promise.race([node.stop(), new Promise((r) => this.env.timer.set(() => r(undefined), 2000))]);
    }
    inc?.end();
    this.connected = false;
  }

  private clearWake(): void {
    if (this.wakeTimer !== undefined) this.env.timer.clear(this.wakeTimer);
    this.wakeTimer = undefined;
  }
}

/** The error code in a node's backoff detail ("CODE, retry in N ms" or "gave up: CODE"); a give-up is counted apart. */
export function errorCodeOf(detail: string): string {
  const m = /^(gave up: )?([A-Za-z_0-9]+)/.exec(detail);
  if (!m) return '?';
  return m[1] ? `${m[2]} (gave up)` : m[2]!;
}
