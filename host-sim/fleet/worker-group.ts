/**
 * The fleet's handle on a device group running in a worker thread
 * (group-worker.ts): forwards commands, and replays the worker's event
 * batches into the same GroupEvents the inline group calls directly.
 */
import { Worker } from 'node:worker_threads';
import type { FleetGroup, GroupConfig, GroupEvents, GroupFaults } from './device-group.js';
import type { GroupWorkerData, MainToWorker, WorkerToMain } from './group-protocol.js';

const BOOT_URL = new URL('./group-worker-boot.mjs', import.meta.url);
/** Loading the TypeScript sources in a fresh thread takes a moment; a hung worker must not hang the run. */
const LOAD_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

export class WorkerGroup implements FleetGroup {
  private connected = 0;
  private alive = true;
  private nextFlushId = 1;
  private readonly flushes = new Map<number, () => void>();
  private stopped: (() => void) | undefined;
  /** Why the worker died, if it did. */
  failure: string | undefined;

  private constructor(
    private readonly worker: Worker,
    readonly threadId: number,
    readonly deviceCount: number,
    private readonly events: GroupEvents,
    private readonly onFailure: (message: string) => void,
  ) {
    worker.on('message', (m: WorkerToMain) => this.onMessage(m));
    worker.on('error', (e) => this.fail(e instanceof Error ? e.message : String(e)));
    worker.on('exit', (code) => {
      if (this.alive && this.stopped === undefined) this.fail(`worker exited with code ${code}`);
      this.settleAll();
    });
  }

  /** Starts a worker thread for `config` and resolves once its modules are loaded (devices not yet booted). */
  static spawn(config: GroupConfig, events: GroupEvents, logLevel: string, onFailure: (message: string) => void): Promise<WorkerGroup> {
    const workerData: GroupWorkerData = { config, logLevel };
    const worker = new Worker(BOOT_URL, { workerData });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        void worker.terminate();
        reject(new Error(`device-group worker did not load within ${LOAD_TIMEOUT_MS} ms`));
      }, LOAD_TIMEOUT_MS);
      const onMessage = (m: WorkerToMain) => {
        if (m.t !== 'loaded') return;
        cleanup();
        resolve(new WorkerGroup(worker, m.threadId, config.devices.length, events, onFailure));
      };
      const onError = (e: unknown) => {
        cleanup();
        void worker.terminate();
        reject(e instanceof Error ? e : new Error(String(e)));
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new Error(`device-group worker exited with code ${code} while loading`));
      };
      const cleanup = () => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    });
  }

  private send(m: MainToWorker): void {
    if (this.alive) this.worker.postMessage(m);
  }

  private onMessage(m: WorkerToMain): void {
    const ev = this.events;
    switch (m.t) {
      case 'batch':
        for (const [topic, payload] of m.sent) ev.sent(topic, payload);
        for (const [topic, payload] of m.uncertain) ev.uncertain(topic, payload);
        for (const [devId, phase, ms, after] of m.ready) ev.ready(devId, phase, ms, after);
        for (const [code, n] of Object.entries(m.errors)) for (let i = 0; i < n; i++) ev.error('', code);
        for (let i = 0; i < m.drops; i++) ev.drop();
        for (let i = 0; i < m.powerCuts; i++) ev.powerCut();
        for (const c of m.captures) ev.capture(c);
        for (const [devId, name, value] of m.commands) ev.command(devId, name, value);
        this.connected = m.connected;
        break;
      case 'flushed':
        this.flushes.get(m.id)?.();
        this.flushes.delete(m.id);
        break;
      case 'stopped':
        this.stopped?.();
        break;
      case 'fatal':
        this.fail(m.message);
        break;
      case 'loaded':
        break;
    }
  }

  private fail(message: string): void {
    if (this.failure === undefined) {
      this.failure = message;
      this.onFailure(message);
    }
    this.alive = false;
    this.connected = 0;
    this.settleAll();
  }

  private settleAll(): void {
    for (const done of this.flushes.values()) done();
    this.flushes.clear();
    this.stopped?.();
  }

  connectedCount(): number {
    return this.connected;
  }

  start(): void {
    this.send({ t: 'start' });
  }

  setFaults(faults: Partial<GroupFaults>): void {
    this.send({ t: 'faults', faults });
  }

  quiesce(): void {
    this.send({ t: 'quiesce' });
  }

  wakeAll(): void {
    this.send({ t: 'wake' });
  }

  flush(): Promise<void> {
    if (!this.alive) return Promise.resolve();
    const id = this.nextFlushId++;
    return new Promise((resolve) => {
      this.flushes.set(id, resolve);
      this.send({ t: 'flush', id });
    });
  }

  async stop(): Promise<void> {
    if (this.alive) {
      const stopped = new Promise<void>((resolve) => (this.stopped = resolve));
      this.send({ t: 'stop' });
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([stopped, new Promise<void>((r) => (timer = setTimeout(r, STOP_TIMEOUT_MS)))]);
      clearTimeout(timer);
    }
    this.alive = false;
    await this.worker.terminate();
  }
}
