/**
 * The sensor node: one small state machine with explicit states.
 *
 *   boot -> wifi -> connecting -> subscribing -> publishing -> listening
 *                      ^  (phase 1 on first boot,                 |
 *                      |   phase 2 after a wake)                  v
 *                   backoff <- any failure            sleeping (deep sleep: the
 *                      |    (bounded, exponential,     program ends, the chip
 *                      v     jittered retries)         restarts at boot)
 *                   sleeping / waiting (retries       or waiting (stay connected,
 *                   exhausted: try again much later)   Timer) -> publishing
 *
 * Watchdog-safe by construction: every step that waits on the outside world
 * has a timeout, every retry loop is bounded, and nothing thrown by a step or
 * a callback escapes the machine (it becomes a logged transition). All
 * platform services are injected, so the same class runs on an ESP32, inside
 * the XS engine under test and under Node (host simulator).
 */
import { MqsecError, asMqsecError, fail } from '../core/errors.js';
import type { Log, Random, Storage, Timer, TimerHandle } from '../core/platform.js';
import { silentLog } from '../core/platform.js';
import {
  type AppSettings,
  type Command,
  SETTINGS_KEY,
  checkReadingKind,
  commandFilter,
  decodeSettings,
  encodeReading,
  encodeSettings,
  parseCommand,
  readingTopic,
} from './commands.js';
import type { Network, Reading, SecureLink, Sensor, Sleep, Watchdog } from './ports.js';
import { ReservedCounter } from './reserved-counter.js';
import { isCharsOf, isIdChar } from '../core/ascii.js';

export type NodeState =
  | 'boot'
  | 'wifi'
  | 'connecting'
  | 'subscribing'
  | 'publishing'
  | 'listening'
  | 'waiting'
  | 'backoff'
  | 'sleeping'
  | 'stopped';

export interface RetryPolicy {
  /** Failed attempts of one step (Wi-Fi, connect) before the node gives up for a while. */
  attempts: number;
  baseMs: number;
  maxMs: number;
}

export interface SensorNodeOptions {
  devId: string;
  link: SecureLink;
  network: Network;
  sensor: Sensor;
  sleep: Sleep;
  storage: Storage;
  timer: Timer;
  random: Random;
  log?: Log;
  watchdog?: Watchdog;
  /** Settings used until a command changes them (then they persist). */
  defaults?: Partial<AppSettings>;
  /** How long to stay connected after publishing, to receive commands, before sleeping. */
  listenMs?: number;
  /** Upper bound for any single step that waits on the network. */
  stepTimeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  /** After retries are exhausted: sleep this long, then start over from Wi-Fi. */
  giveUpSleepMs?: number;
  /** Called on every transition (simulator, tests, a status LED). */
  onState?: (state: NodeState, detail?: string) => void;
}

export interface NodeStats {
  boots: number;
  phase1: number;
  phase2: number;
  published: number;
  commands: number;
  badCommands: number;
  failures: number;
  sensorErrors: number;
  lastError?: string;
}

export const DEFAULT_SETTINGS: Readonly<AppSettings> = Object.freeze({ intervalS: 60, sleepMode: 'deep' });
export const SEQUENCE_KEY = 'app-seq';

export class SensorNode {
  private current: NodeState = 'boot';
  private settings: AppSettings;
  private readonly retry: RetryPolicy;
  private readonly log: Log;
  private readonly sequence: ReservedCounter;
  private failuresInStep = 0;
  private linkUp = false;
  private stopping = false;
  private running: Promise<void> | undefined;
  /** Wakes an interruptible wait (command "sample", link down, stop). */
  private wakeWait: ((why: string) => void) | undefined;
  private sampleRequested = false;
  /** The last reconnect was for a used-up sequence range (NONCE_EXHAUSTED). */
  private reconnectedForRange = false;
  readonly stats: NodeStats = { boots: 0, phase1: 0, phase2: 0, published: 0, commands: 0, badCommands: 0, failures: 0, sensorErrors: 0 };

  constructor(private readonly o: SensorNodeOptions) {
    if (!isCharsOf(o.devId, 1, 23, isIdChar)) fail('MALFORMED', 'device id must be 1..23 of [A-Za-z0-9_.-]');
    this.log = o.log ?? silentLog;
    this.settings = { ...DEFAULT_SETTINGS, ...o.defaults };
    this.retry = { attempts: 5, baseMs: 1000, maxMs: 30_000, ...o.retry };
    this.sequence = new ReservedCounter(o.storage, SEQUENCE_KEY, 32);
  }

  get state(): NodeState {
    return this.current;
  }

  get currentSettings(): AppSettings {
    return { ...this.settings };
  }

  /** Starts the machine; the returned promise settles when it stops or enters deep sleep. Never rejects. */
  start(): Promise<void> {
    this.running ??= this.run();
    return this.running;
  }

  /** Stops at the next transition, closing the link. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wakeWait?.('stop');
    await this.running;
  }

  private enter(state: NodeState, detail?: string): void {
    this.current = state;
    this.o.watchdog?.feed();
    this.log.debug('state', { state, detail });
    try {
      this.o.onState?.(state, detail);
    } catch {
      // an observer's bug must not stop the node
    }
  }

  private async run(): Promise<void> {
    try {
      await this.boot();
      let next: NodeState = 'wifi';
      while (!this.stopping) {
        next = await this.step(next);
        if (next === 'sleeping' || next === 'stopped') break;
      }
      if (this.stopping && this.current !== 'sleeping') await this.shutdown();
    } catch (e) {
      // Last line of defence: a bug in a step must not leave the node hanging awake.
      const err = asMqsecError(e);
      this.stats.lastError = err.code;
      this.log.error('node failed', { code: err.code, message: err.message });
      try {
        if (this.o.sleep.deepSleepSupported) await this.goToSleep(this.o.giveUpSleepMs ?? 300_000, 'internal error');
        else await this.shutdown();
      } catch {
        this.enter('stopped', 'internal error');
      }
    }
  }

  private async boot(): Promise<void> {
    this.enter('boot', this.o.sleep.wakeCause());
    this.stats.boots++;
    try {
      const stored = decodeSettings(await this.o.storage.get(SETTINGS_KEY));
      if (stored) this.settings = stored;
    } catch (e) {
      this.log.warn('settings unreadable, using defaults', { code: asMqsecError(e).code });
    }
  }

  /** Runs one state and returns the next. */
  private async step(state: NodeState): Promise<NodeState> {
    switch (state) {
      case 'wifi':
        this.enter('wifi');
        try {
          await this.withTimeout(this.o.network.connect(), 'wifi');
          this.failuresInStep = 0;
          return 'connecting';
        } catch (e) {
          return this.failed('wifi', e);
        }
      case 'connecting':
        this.enter('connecting');
        try {
          const opened = await this.withTimeout(
            this.o.link.open({ onMessage: (t, p) => this.onMessage(t, p), onDown: (err) => this.onLinkDown(err) }),
            'connect',
          );
          this.linkUp = true;
          if (opened.phase === 1) this.stats.phase1++;
          else this.stats.phase2++;
          this.failuresInStep = 0;
          this.log.info('secure session up', { phase: opened.phase });
          return 'subscribing';
        } catch (e) {
          await this.closeLink();
          return this.failed('connecting', e);
        }
      case 'subscribing':
        this.enter('subscribing');
        try {
          await this.withTimeout(this.o.link.subscribe(commandFilter(this.o.devId)), 'subscribe');
          return 'publishing';
        } catch (e) {
          await this.closeLink();
          return this.failed('connecting', e);
        }
      case 'publishing':
        this.enter('publishing');
        try {
          await this.publishReadings();
          this.reconnectedForRange = false;
          return 'listening';
        } catch (e) {
          await this.closeLink();
          // The connection's sequence range is used up (§8.3, §14.4): not a fault, a new
          // connection brings a new one. The link kept the reading; reconnect at once.
          // Twice in a row (a fresh range used up at once) is a fault like any other.
          if (asMqsecError(e).code === 'NONCE_EXHAUSTED' && !this.stopping && !this.reconnectedForRange) {
            this.reconnectedForRange = true;
            return 'connecting';
          }
          return this.failed('connecting', e);
        }
      case 'listening':
        this.enter('listening');
        // Give the backend a moment to deliver queued commands before sleeping.
        await this.interruptibleWait(this.o.listenMs ?? 1500, false);
        if (!this.linkUp && !this.stopping) return 'connecting';
        if (this.sampleRequested) return 'publishing';
        if (this.settings.sleepMode === 'deep' && this.o.sleep.deepSleepSupported) {
          await this.closeLink(); // waits for outstanding PUBACKs while the link is up
          // Deep sleep loses RAM, and with it any reading the broker has not acknowledged:
          // reconnect and deliver it first (bounded by the retry policy like any connect).
          if ((this.o.link.unacknowledged?.() ?? 0) > 0) {
            this.log.warn('unacknowledged readings before sleep: reconnecting', { count: this.o.link.unacknowledged?.() });
            return 'connecting';
          }
          await this.goToSleep(this.settings.intervalS * 1000, 'interval');
          return 'sleeping';
        }
        return 'waiting';
      case 'waiting': {
        this.enter('waiting');
        await this.interruptibleWait(this.settings.intervalS * 1000, true);
        if (this.stopping) return 'stopped';
        if (!this.linkUp) return 'connecting';
        return 'publishing';
      }
      default:
        return fail('BAD_STATE', `no step for state ${state}`);
    }
  }

  private async publishReadings(): Promise<void> {
    this.sampleRequested = false;
    let readings: Reading[];
    try {
      readings = await this.withTimeout(this.o.sensor.read(), 'sensor');
    } catch (e) {
      // A sensor fault is not a link fault: report nothing this round, keep the session.
      this.stats.sensorErrors++;
      this.log.warn('sensor read failed', { code: asMqsecError(e).code });
      return;
    }
    for (const r of readings) {
      checkReadingKind(r.kind);
      const n = await this.sequence.take();
      await this.withTimeout(this.o.link.publish(readingTopic(this.o.devId, r.kind), encodeReading(r, n), 1), 'publish');
      this.stats.published++;
    }
  }

  /** Records a failure of `retryState`; returns the state to go to after a backoff, or gives up for a while. */
  private async failed(retryState: 'wifi' | 'connecting', e: unknown): Promise<NodeState> {
    const err = asMqsecError(e);
    this.stats.failures++;
    this.stats.lastError = err.code;
    this.failuresInStep++;
    this.log.warn('step failed', { state: retryState, code: err.code, attempt: this.failuresInStep });
    if (this.stopping) return 'stopped';
    if (this.failuresInStep >= this.retry.attempts) {
      this.failuresInStep = 0;
      const ms = this.o.giveUpSleepMs ?? 300_000;
      if (this.o.sleep.deepSleepSupported) {
        await this.goToSleep(ms, `gave up: ${err.code}`);
        return 'sleeping';
      }
      this.enter('backoff', `gave up: ${err.code}`);
      await this.interruptibleWait(ms, false);
      return this.stopping ? 'stopped' : 'wifi';
    }
    const delay = this.backoffMs(this.failuresInStep);
    this.enter('backoff', `${err.code}, retry in ${delay} ms`);
    await this.interruptibleWait(delay, false);
    return this.stopping ? 'stopped' : retryState;
  }

  /** Exponential backoff with "equal jitter": half fixed, half random, so a fleet does not reconnect in lock-step. */
  backoffMs(attempt: number): number {
    const exp = Math.min(this.retry.maxMs, this.retry.baseMs * 2 ** Math.min(attempt - 1, 20));
    const r = new Uint8Array(2);
    this.o.random.fill(r);
    const half = Math.floor(exp / 2);
    return half + Math.floor((((r[0] << 8) | r[1]) / 65536) * (exp - half + 1));
  }

  private onMessage(topic: string, payload: Uint8Array): void {
    let cmd: Command;
    try {
      cmd = parseCommand(this.o.devId, topic, payload);
    } catch (e) {
      this.stats.badCommands++;
      this.log.warn('command refused', { topic, code: asMqsecError(e).code });
      return;
    }
    this.stats.commands++;
    this.log.info('command', { kind: cmd.kind });
    switch (cmd.kind) {
      case 'interval':
        this.changeSettings({ ...this.settings, intervalS: cmd.seconds });
        break;
      case 'sleep':
        this.changeSettings({ ...this.settings, sleepMode: cmd.mode });
        break;
      case 'sample':
        this.sampleRequested = true;
        this.wakeWait?.('sample');
        break;
    }
  }

  private changeSettings(next: AppSettings): void {
    if (next.intervalS === this.settings.intervalS && next.sleepMode === this.settings.sleepMode) return; // no flash write for a no-op
    this.settings = next;
    // Fire and forget: a storage failure only costs the setting after the next reboot.
    this.o.storage.put(SETTINGS_KEY, encodeSettings(next)).catch((e) => {
      this.log.warn('settings not persisted', { code: asMqsecError(e).code });
    });
    // A shorter interval takes effect at once when the node is waiting.
    if (this.current === 'waiting') this.wakeWait?.('settings');
  }

  private onLinkDown(err?: MqsecError): void {
    if (!this.linkUp) return;
    this.linkUp = false;
    this.log.warn('secure link down', { code: err?.code });
    this.wakeWait?.('link down');
  }

  private async closeLink(): Promise<void> {
    this.linkUp = false;
    try {
      await this.withTimeout(this.o.link.close(), 'close');
    } catch {
      // closing is best effort: the chip is about to sleep or retry anyway
    }
  }

  private async shutdown(): Promise<void> {
    await this.closeLink();
    this.enter('stopped');
  }

  private async goToSleep(ms: number, why: string): Promise<void> {
    await this.closeLink();
    try {
      this.o.network.disconnect?.();
    } catch {
      // radio off is an optimisation
    }
    this.enter('sleeping', why);
    this.o.sleep.deepSleep(ms);
  }

  /**
   * Waits `ms`, or less when woken (stop; a "sample" command; the link going
   * down; and, if `byCommands`, a settings change while waiting re-arms it).
   */
  private interruptibleWait(ms: number, byCommands: boolean): Promise<void> {
    if (this.stopping) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let handle: TimerHandle | undefined;
      const done = () => {
        if (handle !== undefined) this.o.timer.clear(handle);
        handle = undefined;
        this.wakeWait = undefined;
        resolve();
      };
      this.wakeWait = (why) => {
        if (why === 'settings') {
          if (!byCommands) return;
          // re-arm with the new interval
          if (handle !== undefined) this.o.timer.clear(handle);
          handle = this.o.timer.set(done, this.settings.intervalS * 1000);
          return;
        }
        done();
      };
      handle = this.o.timer.set(done, ms);
    });
  }

  /** Races a step against the step timeout; the loser is ignored (its late result is dropped). */
  private withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
    const ms = this.o.stepTimeoutMs ?? 15_000;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const handle = this.o.timer.set(() => {
        if (settled) return;
        settled = true;
        reject(new MqsecError('TIMEOUT', `${what} took longer than ${ms} ms`));
      }, ms);
      p.then(
        (v) => {
          if (settled) return;
          settled = true;
          this.o.timer.clear(handle);
          resolve(v);
        },
        (e) => {
          if (settled) return;
          settled = true;
          this.o.timer.clear(handle);
          reject(e);
        },
      );
    });
  }
}
