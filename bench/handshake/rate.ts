/**
 * Handshake rate, with the clients in their own processes: a pool of
 * worker processes (bench/handshake/rate-worker.ts), each running several
 * client loops (each loop its own client id / device, as concurrent devices
 * would be) that dial a method's full handshake up to ready, close and dial
 * again for a fixed time. The clients never share an event loop with the
 * benchmark's bookkeeping or with each other's process, so on a machine with
 * spare cores they are not the bottleneck; and the primary figure does not
 * depend on them anyway: the broker process's CPU time per completed
 * handshake (from /proc, read just before the loops start and after they
 * stop), and its inverse, handshakes per broker-CPU-second.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { perBrokerCpu } from '../stats.js';
import { procCpuMs, trackChild, untrackChild } from '../servers/spawn.js';
import type { TlsCredentials } from './tls.js';

/** A handshake method described in plain data, so a worker process can build it. */
export type RateSpec =
  | { kind: 'plain'; port: number; clientId: string; username?: string; password?: string }
  | { kind: 'tls12_mutual_cert' | 'tls_resumption' | 'tls13_psk' | 'tls12_psk'; port: number; clientId: string; creds: WireCredentials }
  | { kind: 'mqsec_phase1' | 'mqsec_phase2'; port: number; device: { id: string; keyHex: string } };

/** TlsCredentials with the PSK as hex (IPC carries JSON). */
export type WireCredentials = Omit<TlsCredentials, 'psk'> & { pskHex: string };

export function wireCredentials(c: TlsCredentials): WireCredentials {
  return { pem: c.pem, deviceId: c.deviceId, password: c.password, pskIdentity: c.pskIdentity, pskHex: c.psk.toString('hex') };
}

export interface RateResult {
  perSecond: number;
  completed: number;
  failed: number;
  seconds: number;
  /** Broker CPU ms per completed handshake, if measurable. */
  brokerCpuMsPerHandshake?: number;
  /** Completed handshakes per second of broker CPU time. */
  handshakesPerBrokerCpuSecond?: number;
  firstError?: string;
}

export type WorkerRequest = { type: 'prepare'; id: number; specs: RateSpec[] } | { type: 'go'; id: number; durationMs: number };
export type WorkerReply =
  | { type: 'prepared'; id: number; error?: string }
  | { type: 'done'; id: number; completed: number; failed: number; firstError?: string };

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'rate-worker.ts');

/** Client worker processes, started once and reused for every method and round. */
export class RateClientPool {
  private readonly workers: ChildProcess[];
  private nextId = 0;

  private constructor(workers: ChildProcess[]) {
    this.workers = workers;
  }

  static async start(size: number): Promise<RateClientPool> {
    const workers: ChildProcess[] = [];
    for (let i = 0; i < size; i++) {
      const w = fork(WORKER, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      trackChild(w.pid!);
      w.once('exit', () => untrackChild(w.pid!));
      workers.push(w);
    }
    const pool = new RateClientPool(workers);
    // a round trip through every worker: all have loaded their modules
    await Promise.all(workers.map((w) => pool.ask(w, { type: 'prepare', id: 0, specs: [] })));
    return pool;
  }

  get size(): number {
    return this.workers.length;
  }

  private ask<R extends WorkerReply>(w: ChildProcess, req: WorkerRequest): Promise<R> {
    const id = req.id || ++this.nextId;
    return new Promise((resolve, reject) => {
      const onMessage = (m: WorkerReply) => {
        if (m.id !== id) return;
        w.off('message', onMessage);
        w.off('exit', onExit);
        resolve(m as R);
      };
      const onExit = (code: number | null) => {
        w.off('message', onMessage);
        reject(new Error(`rate worker exited with ${code}`));
      };
      w.on('message', onMessage);
      w.once('exit', onExit);
      w.send({ ...req, id });
    });
  }

  /**
   * Runs `specsPerWorker[i]` in worker i (one client loop per spec) for
   * `durationMs`, after every worker has prepared its methods (TLS session,
   * mqsec ticket); broker CPU is read around the timed part only.
   */
  async measure(specsPerWorker: RateSpec[][], durationMs: number, brokerPid?: number, onStart?: () => void): Promise<RateResult> {
    const used = this.workers.slice(0, specsPerWorker.length);
    const prepared = await Promise.all(used.map((w, i) => this.ask<Extract<WorkerReply, { type: 'prepared' }>>(w, { type: 'prepare', id: 0, specs: specsPerWorker[i] })));
    const bad = prepared.find((p) => p.error);
    if (bad) throw new Error(`prepare: ${bad.error}`);
    onStart?.();
    const cpu0 = brokerPid === undefined ? undefined : procCpuMs(brokerPid);
    const t0 = performance.now();
    const done = await Promise.all(used.map((w) => this.ask<Extract<WorkerReply, { type: 'done' }>>(w, { type: 'go', id: 0, durationMs })));
    const seconds = (performance.now() - t0) / 1000;
    const cpu1 = brokerPid === undefined ? undefined : procCpuMs(brokerPid);
    const completed = done.reduce((n, d) => n + d.completed, 0);
    const failed = done.reduce((n, d) => n + d.failed, 0);
    const res: RateResult = { perSecond: Math.round(completed / seconds), completed, failed, seconds: Math.round(seconds * 100) / 100 };
    const cpu = perBrokerCpu(completed, cpu0 !== undefined && cpu1 !== undefined ? cpu1 - cpu0 : undefined);
    if (cpu.cpuMsPerOp !== null) res.brokerCpuMsPerHandshake = cpu.cpuMsPerOp;
    if (cpu.opsPerCpuSecond !== null) res.handshakesPerBrokerCpuSecond = cpu.opsPerCpuSecond;
    const firstError = done.find((d) => d.firstError)?.firstError;
    if (firstError) res.firstError = firstError;
    return res;
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.workers.map(
        (w) =>
          new Promise<void>((r) => {
            if (w.exitCode !== null || w.signalCode !== null) return r();
            w.once('exit', () => r());
            w.kill('SIGTERM');
          }),
      ),
    );
  }
}

/** Splits `loops` client loops over `workers` processes: loop i always goes to worker i mod workers (a device's state lives in one process). */
export function splitLoops<T>(loops: readonly T[], workers: number): T[][] {
  const out: T[][] = Array.from({ length: Math.min(workers, loops.length) }, () => []);
  loops.forEach((l, i) => out[i % out.length].push(l));
  return out;
}
